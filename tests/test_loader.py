"""Loading pipeline files: errors as file:line, isolation, several pipelines."""

from __future__ import annotations

import pytest

from nbflow.exceptions import DagCycleError, NbflowError, PipelineLoadError, PipelineNotFoundError
from nbflow.loader import load_file, load_pipeline


def test_loads_module_level_pipelines_and_sibling_imports(write_pipeline):
    write_pipeline("def helper():\n    return 41\n", name="helpers.py")
    path = write_pipeline(
        """
        from nbflow import Pipeline, task
        from helpers import helper

        with Pipeline("one") as first:
            @task
            def f():
                return helper() + 1
            f()

        with Pipeline("two") as second:
            @task
            def g():
                return 2
            g()
        """
    )
    found = load_file(path)
    assert set(found) == {"one", "two"}
    assert found["one"].file == str(path)
    assert load_pipeline(path, "two").name == "two"
    with pytest.raises(PipelineNotFoundError, match="several pipelines: one, two"):
        load_pipeline(path)
    with pytest.raises(PipelineNotFoundError, match="it defines: one, two"):
        load_pipeline(path, "three")


def test_syntax_error_is_file_and_line(write_pipeline):
    path = write_pipeline("from nbflow import Pipeline\n\nwith Pipeline('x') as p\n    pass\n")
    with pytest.raises(PipelineLoadError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}:3: SyntaxError")


def test_exception_in_file_is_file_and_line(write_pipeline):
    path = write_pipeline("from nbflow import Pipeline\nx = 1\nraise RuntimeError('boom')\n")
    with pytest.raises(PipelineLoadError) as info:
        load_file(path)
    assert str(info.value) == f"{path}:3: RuntimeError: boom"


def test_cycle_in_file_keeps_type_and_names_file(write_pipeline):
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell
        with Pipeline("loop") as p:
            a = shell("true", name="a")
            b = shell("true", name="b")
            a >> b >> a
        """
    )
    with pytest.raises(DagCycleError) as info:
        load_file(path)
    assert str(path) in str(info.value) and "a -> b -> a" in str(info.value)


def test_definition_error_points_at_the_line_in_the_file(write_pipeline):
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell
        with Pipeline("dup") as p:
            shell("true", name="a")
            shell("true", name="a")
        """
    )
    with pytest.raises(NbflowError) as info:
        load_file(path)
    assert f"{path}:5" in str(info.value)


def test_file_without_pipeline_and_missing_file(write_pipeline, tmp_path):
    path = write_pipeline("x = 1\n")
    with pytest.raises(PipelineLoadError, match="defines no Pipeline"):
        load_file(path)
    with pytest.raises(PipelineNotFoundError, match="no pipeline file"):
        load_file(tmp_path / "nope.py")
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(PipelineLoadError, match=".txt"):
        load_file(other)
