"""Tests for nbflow/params.py: the notebook parameter contract (no kernel is started)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbflow.exceptions import DefinitionError, NotebookNotFoundError, ParameterError
from nbflow.params import (
    ParamSpec,
    check_kernel,
    check_notebook_parameters,
    coerce_value,
    has_parameters_cell,
    inspect_parameters,
    resolve_run_params,
)

NB = Path(__file__).parent / "notebooks"
PARAMS_OK = NB / "params_ok.ipynb"
NO_PARAMS = NB / "no_params.ipynb"


def _write_params_nb(path: Path, source: str, *, kernelspec: bool = True) -> Path:
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    meta = {"language_info": {"name": "python"}}
    if kernelspec:
        meta["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=[cell, new_code_cell("print(1)")], metadata=meta), path)
    return path


def _check(given, path=PARAMS_OK, **kw):
    kw.setdefault("task_id", "train")
    kw.setdefault("pipeline", "demo")
    check_notebook_parameters(path, given, **kw)


# ----------------------------------------------------------------------------- inspection


def test_inspect_parameters_types_defaults_and_help():
    specs = inspect_parameters(PARAMS_OK)
    assert list(specs) == ["alpha", "n", "name", "flag", "items", "opts", "anything"]
    assert specs["alpha"] == ParamSpec("alpha", "float", "0.5", "learning rate")
    # papermill gives no type for "n = 5"; nbflow infers it from the literal.
    assert specs["n"].type_name == "int" and specs["n"].default == "5"
    assert specs["name"].type_name == "str" and specs["name"].default == '"world"'
    assert specs["flag"].type_name == "bool"
    assert specs["items"].type_name == "list"
    assert specs["opts"].type_name == "dict"
    assert specs["anything"].type_name is None  # a None default says nothing about the type


def test_paramspec_is_frozen():
    spec = inspect_parameters(PARAMS_OK)["alpha"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "beta"  # type: ignore[misc]


def test_no_parameters_cell_gives_empty_dict():
    assert inspect_parameters(NO_PARAMS) == {}
    assert has_parameters_cell(NO_PARAMS) is False
    assert has_parameters_cell(PARAMS_OK) is True


def test_inspect_without_kernelspec_reads_cell_as_python():
    specs = inspect_parameters(NB / "no_kernelspec.ipynb")
    assert specs["x"].type_name == "int"


def test_declarations_papermill_skips_are_still_declared(tmp_path):
    nb = _write_params_nb(
        tmp_path / "odd.ipynb",
        "a, b = 1, 2\nwhen: pd.Timestamp = None\nk: Optional[int] = 3\nz: Any = 5\n",
    )
    specs = inspect_parameters(nb)
    assert {"a", "b", "when", "k", "z"} <= set(specs)
    assert specs["when"].type_name is None
    assert specs["k"].type_name == "int"
    assert specs["z"].type_name is None  # an annotation nbflow cannot check wins over the literal
    _check({"a": 3, "when": "2024-01-01", "z": "anything"}, path=nb)


def test_cache_follows_file_changes(tmp_path):
    nb = _write_params_nb(tmp_path / "p.ipynb", "alpha = 0.1\n")
    assert set(inspect_parameters(nb)) == {"alpha"}
    first = inspect_parameters(nb)
    first["injected"] = "caller's change"  # callers get a copy, the cache is not changed
    assert "injected" not in inspect_parameters(nb)
    _write_params_nb(nb, "alpha = 0.1\nbeta_with_longer_name = 'x'\n")
    assert set(inspect_parameters(nb)) == {"alpha", "beta_with_longer_name"}


def test_missing_notebook_raises_not_found(tmp_path):
    with pytest.raises(NotebookNotFoundError, match="nope.ipynb"):
        inspect_parameters(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookNotFoundError):
        has_parameters_cell(tmp_path / "nope.ipynb")


def test_path_with_braces_is_not_a_papermill_template(tmp_path):
    folder = tmp_path / "{region}"
    folder.mkdir()
    nb = _write_params_nb(folder / "p.ipynb", "alpha = 0.1\n")
    assert set(inspect_parameters(nb)) == {"alpha"}


# ----------------------------------------------------------------------------- checking


def test_missing_parameters_cell_strict_names_notebook_task_and_fix():
    with pytest.raises(ParameterError) as info:
        _check({"alpha": 0.1}, path=NO_PARAMS)
    text = str(info.value)
    assert "no_params.ipynb" in text and "'train'" in text and "demo" in text
    assert "add a cell tagged 'parameters'" in text
    assert "Property Inspector" in text and "Cell Tags" in text
    assert 'params_cell="inject_top"' in text
    assert info.value.unknown == ["alpha"]


def test_missing_parameters_cell_inject_top_or_nothing_given_is_accepted():
    _check({"alpha": 0.1}, path=NO_PARAMS, params_cell="inject_top")
    _check({}, path=NO_PARAMS)


def test_bad_params_cell_mode_is_a_programmer_error():
    with pytest.raises(ValueError, match="params_cell"):
        _check({}, params_cell="loose")


def test_unknown_parameter_named_with_declared_and_close_match():
    with pytest.raises(ParameterError) as info:
        _check({"alpa": 0.1, "zzz": 1})
    err = info.value
    text = str(err)
    assert "params_ok.ipynb" in text and "'train'" in text
    assert "'alpa'" in text and "'zzz'" in text
    assert "declared: alpha, anything, flag, items, n, name, opts" in text
    assert "did you mean 'alpha'?" in text
    assert "declare it in the parameters cell" in text and "remove it" in text
    assert err.unknown == ["alpa", "zzz"] and err.missing == []


def test_wrong_type_names_notebook_parameter_expected_and_got():
    with pytest.raises(ParameterError) as info:
        _check({"n": "five"})
    text = str(info.value)
    assert "params_ok.ipynb" in text and "'n'" in text
    assert "expects int" in text and "got str" in text and "'five'" in text


def test_wrong_type_of_annotated_parameter():
    with pytest.raises(ParameterError, match=r"'alpha' expects float .*got str"):
        _check({"alpha": "0.5"})


@pytest.mark.parametrize(
    "given",
    [
        {"alpha": 1},  # int is fine for float
        {"alpha": 0.25, "n": 3, "name": "x", "flag": True, "items": [3], "opts": {"b": 2}},
        {"n": None, "alpha": None},  # None fits anything
        {"anything": object()},  # unknown type: not checked
        {"items": (1, 2)},
    ],
)
def test_acceptable_values(given):
    _check(given)


def test_bool_is_not_an_int():
    with pytest.raises(ParameterError, match=r"'n' expects int .*got bool"):
        _check({"n": True})


def test_deferred_values_are_declared_but_not_type_checked():
    _check({"n": "{{ upstream }}"}, deferred=["n"])
    with pytest.raises(ParameterError) as info:
        _check({"later": "x"}, deferred=["later"])
    assert info.value.unknown == ["later"]


# ----------------------------------------------------------------------------- kernels


def test_check_kernel_returns_kernelspec_name():
    assert check_kernel(PARAMS_OK) == "python3"
    assert check_kernel(NB / "no_kernelspec.ipynb", kernel_name="python3") == "python3"


def test_check_kernel_without_kernelspec():
    with pytest.raises(DefinitionError) as info:
        check_kernel(NB / "no_kernelspec.ipynb")
    text = str(info.value)
    assert "no_kernelspec.ipynb has no kernelspec" in text
    assert "JupyterLab" in text and "kernel_name=" in text


def test_check_kernel_unknown_lists_available():
    with pytest.raises(DefinitionError) as info:
        check_kernel(NB / "unknown_kernel.ipynb")
    text = str(info.value)
    assert "kernel 'py99' of notebook" in text and "unknown_kernel.ipynb" in text
    assert "not found; available:" in text and "python3" in text


def test_check_kernel_sees_kernel_installed_after_first_call(tmp_path, monkeypatch):
    check_kernel(PARAMS_OK)  # fills the per-process cache
    spec = tmp_path / "kernels" / "fresh"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Fresh",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert check_kernel(PARAMS_OK, kernel_name="fresh") == "fresh"


# ----------------------------------------------------------------------------- run params


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("true", False, True),
        ("YES", False, True),
        ("1", True, True),
        ("False", True, False),
        ("no", True, False),
        ("0", True, False),
        ("42", 1, 42),
        ("-3", 0, -3),
        ("0.2", 0.5, 0.2),
        ("3", 0.5, 3.0),
        ("[1, 2]", [], [1, 2]),
        ('{"a": 1}', {}, {"a": 1}),
        ("hello", "x", "hello"),
        ("42", "x", "42"),  # str default: unchanged
        ("42", None, 42),  # None default: JSON when it parses
        ("[1]", None, [1]),
        ("plain text", None, "plain text"),  # ... else the string
    ],
)
def test_coerce_value(raw, default, expected):
    value = coerce_value(raw, default)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "default", "words"),
    [
        ("maybe", False, "bool"),
        ("1.5", 1, "int"),
        ("abc", 0.5, "float"),
        ("[1,", [], "JSON list"),
        ('{"a": 1}', [], "JSON list"),
        ("[1]", {}, "JSON dict"),
    ],
)
def test_coerce_value_errors_are_clear(raw, default, words):
    with pytest.raises(ValueError) as info:
        coerce_value(raw, default)
    assert words in str(info.value) and repr(raw) in str(info.value)


def test_resolve_run_params_overlays_and_coerces():
    declared = {"alpha": 0.5, "n": 10, "region": "eu", "debug": False, "tags": [], "extra": None}
    given = {"alpha": "0.2", "n": "3", "debug": "yes", "tags": '["a"]', "extra": "7"}
    given["region"] = "us"
    assert resolve_run_params(declared, given, pipeline="demo") == {
        "alpha": 0.2,
        "n": 3,
        "region": "us",
        "debug": True,
        "tags": ["a"],
        "extra": 7,
    }
    assert resolve_run_params(declared, {}, pipeline="demo") == declared
    # Non-string values are taken as they are.
    assert resolve_run_params(declared, {"n": 4}, pipeline="demo")["n"] == 4


def test_resolve_run_params_unknown_names():
    with pytest.raises(ParameterError) as info:
        resolve_run_params({"alpha": 0.5, "n": 1}, {"alpah": "1", "other": 2}, pipeline="demo")
    text = str(info.value)
    assert "pipeline 'demo'" in text and "'alpah'" in text and "'other'" in text
    assert "declared: alpha, n" in text and "did you mean 'alpha'?" in text
    assert info.value.unknown == ["alpah", "other"]


def test_resolve_run_params_bad_conversion_names_param_type_and_value():
    with pytest.raises(ParameterError) as info:
        resolve_run_params({"n": 10}, {"n": "ten"}, pipeline="demo")
    text = str(info.value)
    assert "'n'" in text and "expects int" in text and "'ten'" in text and "demo" in text


# --- run parameters of the wrong JSON type, too long, NUL, NaN (RELIABILITY 35) -------------

DECLARED = {"n": 2, "C": 1.0, "name": "x", "flag": False, "tags": [], "opts": {}, "free": None}


@pytest.mark.parametrize(
    "name,value,words",
    [
        ("n", [1, 2], "expects int (default 2), got array [1, 2]"),
        ("n", {"a": 1}, "expects int (default 2), got object"),
        ("n", True, "expects int (default 2), got boolean true"),
        ("n", 2.5, "expects int (default 2), got number 2.5"),
        ("n", float("nan"), "NaN"),
        ("n", float("inf"), "Infinity"),
        ("C", True, "expects float (default 1.0), got boolean true"),
        ("C", "nan", "NaN"),
        ("C", float("-inf"), "-Infinity"),
        ("C", [1.0], "expects float"),
        ("flag", 1, "expects bool (default false), got integer 1"),
        ("name", 5, "expects string"),
        ("tags", {"a": 1}, "expects list"),
        ("opts", [1], "expects dict"),
        ("name", "a\x00b", "NUL byte"),
        ("free", {"k": ["a\x00"]}, "NUL byte"),
        ("free", [1, float("nan")], "NaN"),
        ("free", object(), "not a JSON value"),
    ],
)
def test_run_value_of_the_wrong_json_type_is_refused_naming_it(name, value, words):
    with pytest.raises(ParameterError) as info:
        resolve_run_params(DECLARED, {name: value}, pipeline="demo", max_bytes=1000)
    assert words in str(info.value) and f"parameter '{name}'" in str(info.value), str(info.value)
    assert info.value.invalid == [name] and info.value.names == [name]


def test_run_values_of_the_declared_type_pass_and_keep_int_or_float():
    got = resolve_run_params(
        DECLARED,
        {"n": 3, "C": 2, "name": "y", "flag": True, "tags": [1], "opts": {"a": None}, "free": [{"b": 1}]},
        pipeline="demo",
        max_bytes=1000,
    )
    assert got == {"n": 3, "C": 2.0, "name": "y", "flag": True, "tags": [1], "opts": {"a": None}, "free": [{"b": 1}]}
    assert type(got["C"]) is float and type(got["n"]) is int
    assert type(resolve_run_params(DECLARED, {"C": 2.0}, pipeline="demo", max_bytes=1000)["C"]) is float
    assert resolve_run_params(DECLARED, {"n": None}, pipeline="demo", max_bytes=1000)["n"] is None


def test_run_value_longer_than_max_param_bytes_is_refused_with_the_setting(monkeypatch):
    with pytest.raises(ParameterError) as info:
        resolve_run_params(DECLARED, {"name": "x" * 1000}, pipeline="demo", max_bytes=999)
    assert "1002 bytes as JSON, more than the limit of 999" in str(info.value)
    assert "NBFLOW_MAX_PARAM_BYTES" in str(info.value) and info.value.invalid == ["name"]
    # the default limit comes from the settings
    from nbflow.config import reset_settings

    monkeypatch.setenv("NBFLOW_MAX_PARAM_BYTES", "10")
    reset_settings()
    try:
        with pytest.raises(ParameterError, match="limit of 10"):
            resolve_run_params(DECLARED, {"name": "x" * 20}, pipeline="demo")
    finally:
        monkeypatch.delenv("NBFLOW_MAX_PARAM_BYTES")
        reset_settings()


def test_every_bad_run_value_is_reported_at_once():
    with pytest.raises(ParameterError) as info:
        resolve_run_params(DECLARED, {"n": True, "C": "x", "name": "ok"}, pipeline="demo", max_bytes=1000)
    assert info.value.invalid == ["n", "C"]
    assert "parameter 'n'" in str(info.value) and "parameter 'C'" in str(info.value)
