"""Incremental runs end to end: real kernels, the real CLI, SQLite and PostgreSQL, local and Dask.

Every task appends its name to a side file when it really executes, so each test counts
executions, not only states.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC
from pathlib import Path

import nbformat
import pytest

from nbflow import api
from nbflow.loader import load_pipeline
from tests.conftest import make_notebook


def nbflow(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """The real `nbflow` command (the database: NBFLOW_DB_URL when a test set it, else SQLite in home)."""
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "nbflow", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def executed(side: Path) -> list[str]:
    """What ran since the last call (and forget it)."""
    lines = side.read_text().split() if side.exists() else []
    side.write_text("")
    return lines


def states(run_id: int) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in api.run_details(run_id)["tasks"]}


def whys(run_id: int) -> dict[str, str | None]:
    return {t["task_id"]: t["why"] for t in api.run_details(run_id)["tasks"]}


def write_chain(folder: Path, side: Path) -> Path:
    """prepare.ipynb -> train.ipynb -> evaluate.ipynb; prepare reads data/raw.csv, train receives C."""
    folder.mkdir(parents=True, exist_ok=True)
    make_notebook(
        folder / "prepare.ipynb",
        [
            ("side = ''", ["parameters"]),
            "open(side, 'a').write('prepare\\n')\nimport nbflow\nrows = open('data/raw.csv').read().split()\nnbflow.save('data', len(rows))",
        ],
    )
    make_notebook(
        folder / "train.ipynb",
        [
            ("data = None\nC = 1.0\nside = ''", ["parameters"]),
            "open(side, 'a').write('train\\n')",
            "import nbflow\nnbflow.save('score', data * C)",
        ],
    )
    make_notebook(
        folder / "evaluate.ipynb",
        [
            ("score = None\nside = ''", ["parameters"]),
            "open(side, 'a').write('evaluate\\n')\nimport nbflow\nnbflow.save('report', f'score={score}')",
        ],
    )
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "raw.csv").write_text("a\nb\n")
    path = folder / "pipeline.py"
    path.write_text(
        textwrap.dedent(f"""
        from nbflow import Pipeline, notebook

        SIDE = {str(side)!r}
        with Pipeline("ml", params={{"C": 1.0}}) as pipeline:
            data = notebook("prepare.ipynb", parameters={{"side": SIDE}}, reads=["data/raw.csv"])
            model = notebook("train.ipynb", inputs={{"data": data["data"]}}, parameters={{"side": SIDE}})
            notebook("evaluate.ipynb", inputs={{"score": model["score"]}}, parameters={{"side": SIDE}})
    """)
    )
    return path


def edit_cell(path: Path, index: int, *, source: str | None = None, output: str | None = None) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[index]
    if source is not None:
        cell.source = source
    if output is not None:  # what running it by hand leaves behind: outputs, a count, UI metadata, a new id
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
        cell.execution_count = 12
        cell.metadata["collapsed"] = True
        cell.id = "edited-by-hand"
    nbformat.write(nb, path)


@pytest.fixture(
    params=[("sqlite", "local"), ("sqlite", "dask"), ("postgres", "local"), ("postgres", "dask")],
    ids=lambda p: "-".join(p),
)
def backend(request, nbflow_home):
    """(database, executor); on PostgreSQL NBFLOW_DB_URL is set (the CLI inherits it)."""
    database, executor = request.param
    if database == "postgres":
        request.getfixturevalue("pg_url")  # skips, saying why, without a server
    return database, executor


def test_notebook_chain_runs_only_what_changed(tmp_path, nbflow_home, backend):
    """Unchanged, then a parameter, on every database and executor; the edits of notebooks and
    --force (which touch neither the store's nor the executor's code paths) on SQLite and local."""
    database, executor = backend
    side = tmp_path / "executions.txt"
    path = write_chain(tmp_path / "project", side)
    cwd = path.parent

    def run(*extra: str) -> subprocess.CompletedProcess:
        res = nbflow("run", "pipeline.py", "-e", executor, "-j", "2", *extra, cwd=cwd, home=nbflow_home)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    run()
    assert sorted(executed(side)) == ["evaluate", "prepare", "train"]

    second = run("--incremental")  # unchanged: nothing executes, every task is cached
    assert executed(side) == []
    assert states(2) == {"prepare": "cached", "train": "cached", "evaluate": "cached"}
    assert "reused from run 1, try 1" in second.stdout
    rows = {t["task_id"]: t for t in api.run_details(2)["tasks"]}
    assert {(t["reused_run_id"], t["reused_try"]) for t in rows.values()} == {(1, 1)}
    assert api.load_output(2, "evaluate") == {"report": "score=2.0"}  # the outputs of run 1, through the cached row
    assert api.list_runs("ml", limit=1)[0]["state"] == "success"

    run("-i", "-p", "C=0.5")  # a parameter: only the task that receives it, and what depends on it
    assert executed(side) == ["train", "evaluate"]
    assert states(3) == {"prepare": "cached", "train": "success", "evaluate": "success"}
    assert whys(3) == {
        "prepare": "reused from run 1, try 1",
        "train": "parameter C: 1.0 -> 0.5",
        "evaluate": "upstream train changed",
    }
    assert api.load_output(3, "evaluate") == {"report": "score=1.0"}
    if (database, executor) != ("sqlite", "local"):
        return

    edit_cell(cwd / "evaluate.ipynb", 1, output="ran by hand\n")  # outputs, counts, ids, metadata: not code
    run("-i", "-p", "C=0.5")
    assert executed(side) == []
    assert set(states(4).values()) == {"cached"}

    edit_cell(cwd / "train.ipynb", 2, source="import nbflow\nnbflow.save('score', data * C)  # same result")
    run("-i", "-p", "C=0.5")  # train runs again; it saves the same bytes, so evaluate is still up to date
    assert executed(side) == ["train"]
    assert whys(5)["train"] == "code changed: train.ipynb Cell 3/3"
    assert states(5) == {"prepare": "cached", "train": "success", "evaluate": "cached"}
    assert [t["reused_run_id"] for t in api.run_details(5)["tasks"] if t["task_id"] == "evaluate"] == [3]

    forced = run("-i", "-p", "C=0.5", "--force", "prepare")
    assert sorted(executed(side)) == ["evaluate", "prepare", "train"]
    assert whys(6) == {
        "prepare": "forced (--force)",
        "train": "upstream prepare forced",
        "evaluate": "upstream prepare forced",
    }
    assert "forced (--force)" in forced.stdout


def test_reads_changed_outputs_deleted_and_dry_run_reasons(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    path = write_chain(tmp_path / "project", side)
    cwd = path.parent
    assert nbflow("run", "pipeline.py", "-e", "local", cwd=cwd, home=nbflow_home).returncode == 0
    executed(side)

    (cwd / "data" / "raw.csv").write_text("a\nb\nc\n")
    plan = nbflow("run", "pipeline.py", "-i", "--dry-run", "-p", "C=2", cwd=cwd, home=nbflow_home)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0] == "nbflow: dry run of ml (3 tasks, incremental); nothing runs, no run is recorded"
    assert lines[1].split() == ["run", "prepare", "reads", "data/raw.csv", "changed"]
    assert lines[2].split(None, 2) == ["run", "train", "parameter C: 1.0 -> 2.0; upstream prepare will run"]
    assert lines[3].split(None, 2) == ["run", "evaluate", "upstream train will run"]
    assert lines[4] == "3 to run, 0 to reuse"
    assert api.list_runs("ml") and len(api.list_runs("ml")) == 1 and executed(side) == []  # no run, nothing ran

    (cwd / "data" / "raw.csv").write_text("a\nb\n")  # back as it was: up to date again
    plain = nbflow("run", "pipeline.py", "--dry-run", cwd=cwd, home=nbflow_home)
    assert [line.split(None, 2)[2] for line in plain.stdout.splitlines()[1:4]] == ["not incremental"] * 3
    assert "not incremental: every task runs; add --incremental (-i) to reuse" in plain.stdout

    import shutil

    shutil.rmtree(nbflow_home / "runs" / "ml" / "run-1" / "train")  # its folder gone: stale, never a reuse of nothing
    plan = nbflow("run", "pipeline.py", "-i", "--dry-run", cwd=cwd, home=nbflow_home)
    assert [line.split(None, 2)[1:] for line in plan.stdout.splitlines()[1:4]] == [
        ["prepare", "from run 1, try 1"],
        ["train", "outputs of run 1 are gone"],
        ["evaluate", "upstream train will run"],
    ]
    res = nbflow("run", "pipeline.py", "-i", "-e", "local", cwd=cwd, home=nbflow_home)
    assert res.returncode == 0, res.stderr
    assert executed(side) == ["train"]  # the same score again: evaluate is reused
    assert states(2) == {"prepare": "cached", "train": "success", "evaluate": "cached"}
    tasks = nbflow("tasks", "2", cwd=cwd, home=nbflow_home).stdout
    assert (
        "why it ran / reused" in tasks and "outputs of run 1 are gone" in tasks and "reused from run 1, try 1" in tasks
    )


def test_unknown_force_task_and_force_without_incremental_are_refused_before_anything_runs(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    cwd = write_chain(tmp_path / "project", side).parent
    res = nbflow("run", "pipeline.py", "-i", "--force", "trian", cwd=cwd, home=nbflow_home)
    assert res.returncode == 2
    assert "--force: pipeline 'ml' has no task 'trian'" in res.stderr
    assert "known tasks: evaluate, prepare, train" in res.stderr
    res = nbflow("run", "pipeline.py", "--force", "train", cwd=cwd, home=nbflow_home)
    assert (
        res.returncode == 2
        and "--force only matters in an incremental run" in res.stderr
        and "--incremental (-i)" in res.stderr
    )
    assert executed(side) == [] and api.list_runs("ml") == []


CELLS_SIDE = "SIDE = {side!r}\nimport os"


def test_editing_one_cell_reruns_that_cell_task_and_its_dependents_only(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    nb = tmp_path / "analysis.ipynb"
    cells = [
        CELLS_SIDE.format(side=str(side)),
        "%%nbflow task load --outputs x\nopen(SIDE, 'a').write('load\\n')\nx = 10",
        "%%nbflow task double --inputs x --outputs y\nopen(SIDE, 'a').write('double\\n')\ny = 2 * x",
        "%%nbflow task square --inputs x --outputs z\nopen(SIDE, 'a').write('square\\n')\nz = x * x",
        "%%nbflow task report --after double --inputs y --outputs r\nopen(SIDE, 'a').write('report\\n')\nr = f'y={y}'",
    ]
    make_notebook(nb, cells)
    assert nbflow("run", str(nb), "-e", "local", cwd=tmp_path, home=nbflow_home).returncode == 0
    assert sorted(executed(side)) == ["double", "load", "report", "square"]

    make_notebook(nb, cells[:3] + [cells[3].replace("z = x * x", "z = x ** 3")] + cells[4:])  # one cell edited
    res = nbflow("run", str(nb), "-e", "local", "-i", cwd=tmp_path, home=nbflow_home)
    assert res.returncode == 0, res.stderr
    assert executed(side) == ["square"]
    assert whys(2)["square"] == "code changed: analysis.ipynb Cell 4/5"
    assert states(2) == {"load": "cached", "double": "cached", "square": "success", "report": "cached"}

    cubed = cells[3].replace("z = x * x", "z = x ** 3")
    make_notebook(nb, cells[:2] + [cells[2].replace("2 * x", "3 * x"), cubed] + cells[4:])
    assert nbflow("run", str(nb), "-e", "local", "-i", cwd=tmp_path, home=nbflow_home).returncode == 0
    assert executed(side) == ["double", "report"]
    make_notebook(nb, cells)  # both edits undone: compared with their latest successes, both changed
    assert nbflow("run", str(nb), "-e", "local", "-i", cwd=tmp_path, home=nbflow_home).returncode == 0
    assert sorted(executed(side)) == ["double", "report", "square"]

    make_notebook(nb, [cells[0] + "\nLIMIT = 3"] + cells[1:])  # a setup cell: every cell task runs it
    assert nbflow("run", str(nb), "-e", "local", "-i", cwd=tmp_path, home=nbflow_home).returncode == 0
    assert sorted(executed(side)) == ["double", "load", "report", "square"]
    assert whys(5)["load"] == "code changed: analysis.ipynb Cell 1/5"


PY_PIPELINE = """
from nbflow import Pipeline, task

SIDE = {side!r}

def note(name):
    open(SIDE, "a").write(name + "\\n")

with Pipeline("py", params={{"n": 2}}) as pipeline:
    @task(reads=["raw.csv"])
    def load():
        note("load")
        return open("{folder}/raw.csv").read()

    @task
    def count(text):
        note("count")
        return len(text)

    @task(cache=False)
    def mail(total):
        note("mail")

    @task(cache_ttl=3600)
    def fresh(params):
        note("fresh")
        return params["n"]

    mail(count(load()))
    fresh()
"""


def test_reads_cache_false_and_cache_ttl(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    (tmp_path / "raw.csv").write_text("1,2\n")
    path = tmp_path / "pipeline.py"
    path.write_text(PY_PIPELINE.format(side=str(side), folder=str(tmp_path)))

    def run(**options):
        result = api.run_pipeline(load_pipeline(path), executor="local", **options)
        assert result.ok, result.tasks
        return result

    run()
    assert sorted(executed(side)) == ["count", "fresh", "load", "mail"]
    second = run(incremental=True)
    assert executed(side) == ["mail"]  # cache=False: side effects happen every time
    assert whys(second.run_id) == {
        "load": "reused from run 1, try 1",
        "count": "reused from run 1, try 1",
        "mail": "cache=False",
        "fresh": "reused from run 1, try 1",
    }
    from datetime import datetime, timedelta

    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)  # as if run 1 ended then
    from sqlalchemy import update

    from nbflow.store.orm import task_attempts

    with api.open_store().engine.begin() as conn:  # (finished attempt rows are final for nbflow itself)
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.run_id == 1, task_attempts.c.task_id == "fresh")
            .values(end_date=two_hours_ago)
        )
    third = run(incremental=True)
    assert sorted(executed(side)) == ["fresh", "mail"]
    assert whys(third.run_id)["fresh"].startswith("older than cache_ttl=3600s (run 1 ended 72")

    (tmp_path / "raw.csv").write_text("1,2,3\n")
    fourth = run(incremental=True)
    assert sorted(executed(side)) == ["count", "load", "mail"]
    assert whys(fourth.run_id)["load"] == "reads raw.csv changed"
    assert whys(fourth.run_id)["count"] == "upstream load changed"


UNHASHABLE = """
from nbflow import Pipeline, task

class Model:
    pass

with Pipeline("odd") as pipeline:
    @task
    def fit(model):
        open({side!r}, "a").write("fit\\n")

    fit(Model())
"""


def test_a_value_without_a_deterministic_hash_always_runs_and_says_so(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    path = tmp_path / "odd.py"
    path.write_text(UNHASHABLE.format(side=str(side)))
    for _ in range(2):
        result = api.run_pipeline(load_pipeline(path), executor="inline", incremental=True)
        assert result.ok
    assert executed(side) == ["fit", "fit"]
    why = result.task("fit")["why"]
    assert why.startswith("an argument is a ") and why.endswith(
        "Model, which has no deterministic hash (so it always runs)"
    )


def test_reuse_never_crosses_pipelines_artifact_roots_or_cleaned_runs(tmp_path, nbflow_home, monkeypatch):
    side = tmp_path / "executions.txt"
    (tmp_path / "raw.csv").write_text("1\n")
    path = tmp_path / "pipeline.py"
    path.write_text(PY_PIPELINE.format(side=str(side), folder=str(tmp_path)))
    api.run_pipeline(load_pipeline(path), executor="inline")
    other = tmp_path / "other.py"
    other.write_text(
        PY_PIPELINE.format(side=str(side), folder=str(tmp_path)).replace('Pipeline("py"', 'Pipeline("py2"')
    )
    executed(side)
    result = api.run_pipeline(load_pipeline(other), executor="inline", incremental=True)
    assert sorted(executed(side)) == ["count", "fresh", "load", "mail"]
    assert set(whys(result.run_id).values()) == {"no earlier success", "cache=False"}

    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", str(tmp_path / "elsewhere"))
    api.reset()
    planned = {p.task_id: p.why for p in api.plan_run(load_pipeline(path), incremental=True)}
    assert planned["load"] == "outputs of run 1 are under another artifact root"
    monkeypatch.delenv("NBFLOW_ARTIFACT_ROOT")
    api.reset()

    from datetime import timedelta

    assert sorted(api.clean(timedelta(0))) == [1, 2]  # nbflow db clean: the runs and their folders are gone
    planned = {p.task_id: p.why for p in api.plan_run(load_pipeline(path), incremental=True)}
    assert planned == {
        "load": "no earlier success",
        "count": "no earlier success",
        "mail": "cache=False",
        "fresh": "no earlier success",
    }


def test_incremental_runs_reuse_only_finished_successes_even_when_started_together(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    (tmp_path / "raw.csv").write_text("1\n")
    path = tmp_path / "pipeline.py"
    path.write_text(PY_PIPELINE.format(side=str(side), folder=str(tmp_path)))
    pipeline = load_pipeline(path)
    api.run_pipeline(pipeline, executor="inline")
    unfinished = api.create_run(pipeline)  # queued, its tasks pending: nothing of it may be reused
    first, second = (api.create_run(pipeline, incremental=True) for _ in range(2))
    executed(side)
    results: dict[int, str] = {}

    def drive(run_id: int) -> None:
        results[run_id] = api.drive_run(load_pipeline(path), run_id, executor="local").state.value

    threads = [threading.Thread(target=drive, args=(run_id,)) for run_id in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == {first: "success", second: "success"}
    assert executed(side) == ["mail", "mail"]
    for run_id in (first, second):
        rows = [t for t in api.run_details(run_id)["tasks"] if t["state"] == "cached"]
        assert {t["task_id"] for t in rows} == {"load", "count", "fresh"}
        assert {(t["reused_run_id"], t["reused_try"]) for t in rows} == {(1, 1)}, rows
    assert set(states(unfinished).values()) == {"pending"}


def test_a_pipeline_can_be_incremental_by_default(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    (tmp_path / "raw.csv").write_text("1\n")
    path = tmp_path / "pipeline.py"
    source = PY_PIPELINE.format(side=str(side), folder=str(tmp_path)).replace(
        'params={"n": 2})', 'params={"n": 2}, incremental=True)'
    )
    path.write_text(source)
    assert nbflow("run", str(path), "-e", "inline", cwd=tmp_path, home=nbflow_home).returncode == 0
    executed(side)
    res = nbflow("run", str(path), "-e", "inline", cwd=tmp_path, home=nbflow_home)  # no flag: the pipeline's default
    assert res.returncode == 0 and executed(side) == ["mail"], res.stdout
    res = nbflow("run", str(path), "-e", "inline", "--no-incremental", cwd=tmp_path, home=nbflow_home)
    assert res.returncode == 0 and sorted(executed(side)) == ["count", "fresh", "load", "mail"]
    run_id = api.trigger("py", start=False)  # a triggered (or scheduled) run takes the default too
    assert api.run_details(run_id)["run"]["incremental"] is True
    api.drive_existing(run_id, executor="inline")
    assert executed(side) == ["mail"]


USES_MODULE = """
from nbflow import Pipeline, task

LIMIT = 10

def helper(x):
    return x * 3

with Pipeline("consts") as pipeline:
    @task
    def scaled():
        open({side!r}, "a").write("scaled\\n")
        return helper(LIMIT)

    scaled()
"""


def test_a_constant_changed_after_the_pipeline_was_defined_is_seen_by_the_next_run(tmp_path, nbflow_home):
    """One pipeline object run again in the same process (a notebook kernel): nothing is cached
    across runs, so a module constant changed in between makes the task stale."""
    side = tmp_path / "executions.txt"
    path = tmp_path / "consts.py"
    path.write_text(USES_MODULE.format(side=str(side)))
    pipeline = load_pipeline(path)
    assert api.run_pipeline(pipeline, executor="inline").ok
    assert api.run_pipeline(pipeline, executor="inline", incremental=True).ok
    assert executed(side) == ["scaled"]
    module = sys.modules[pipeline.tasks["scaled"].fn.__module__]
    module.LIMIT = 11  # a global of the pipeline file's module, as a notebook cell would change it
    result = api.run_pipeline(pipeline, executor="inline", incremental=True)
    assert executed(side) == ["scaled"] and result.task("scaled")["why"] == "global LIMIT: 10 -> 11"
    assert api.load_output(result.run_id, "scaled") == 33


def test_retrying_a_task_of_an_incremental_run_runs_it_instead_of_reusing_it_again(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    (tmp_path / "raw.csv").write_text("1\n")
    path = tmp_path / "pipeline.py"
    path.write_text(PY_PIPELINE.format(side=str(side), folder=str(tmp_path)))
    api.run_pipeline(load_pipeline(path), executor="inline")
    second = api.run_pipeline(load_pipeline(path), executor="inline", incremental=True)
    executed(side)
    assert states(second.run_id)["count"] == "cached"
    result = api.rerun(second.run_id, tasks=["count"], executor="inline")  # the web UI's "Retry task"
    assert result.ok and sorted(executed(side)) == ["count", "mail"]
    assert whys(second.run_id)["count"] == "forced (--force)" and states(second.run_id)["load"] == "cached"
    assert api.run_details(second.run_id)["run"]["force"] == ["count"]


MODULE_THINGS = """
import functools
from nbflow import Pipeline, task

SIDE = {side!r}
CFG = {{"lr": 0.1}}


class Scaler:
    factor = 2

    def apply(self, x):
        return x * self.factor


@functools.lru_cache(maxsize=None)
def offset():
    return 1


def note(name):
    open(SIDE, "a").write(name + "\\n")


with Pipeline("things") as pipeline:
    @task
    def prepare():
        note("prepare")  # returns None: no outputs, nothing that can be lost

    @task
    def fit():
        note("fit")
        return Scaler().apply(CFG["lr"]) + offset()

    prepare() >> fit()
"""


@pytest.mark.parametrize(
    "edit, why",
    [
        (('{{"lr": 0.1}}', '{{"lr": 0.5}}'), "global CFG: {'lr': 0.1} -> {'lr': 0.5}"),
        (("return x * self.factor", "return x * self.factor + 1"), "function Scaler.apply changed"),
        (("factor = 2", "factor = 3"), "class Scaler changed"),
        (("return 1", "return 2"), "function offset changed"),
    ],
)
def test_what_a_task_uses_from_its_module_is_part_of_it_and_a_task_returning_none_is_reused(
    tmp_path, nbflow_home, edit, why
):
    """A dict constant, a class's method or attribute, an lru_cache'd helper changed in the file:
    the task that uses it runs again (these were once skipped and the stale result reused). A task
    that returns None is reused (it was once said to have lost its outputs, and always ran)."""
    side = tmp_path / "executions.txt"
    path = tmp_path / "things.py"
    path.write_text(MODULE_THINGS.format(side=str(side)))
    assert nbflow("run", "things.py", "-e", "inline", cwd=tmp_path, home=nbflow_home).returncode == 0
    assert executed(side) == ["prepare", "fit"]
    res = nbflow("run", "things.py", "-e", "inline", "-i", cwd=tmp_path, home=nbflow_home)
    assert res.returncode == 0, res.stderr
    assert executed(side) == [] and states(2) == {"prepare": "cached", "fit": "cached"}
    path.write_text(MODULE_THINGS.replace(*edit).format(side=str(side)))
    res = nbflow("run", "things.py", "-e", "inline", "-i", cwd=tmp_path, home=nbflow_home)
    assert res.returncode == 0, res.stderr
    assert executed(side) == ["fit"] and whys(3) == {"prepare": "reused from run 1, try 1", "fit": why}


def test_a_markdown_cell_added_to_a_notebook_changes_nothing(tmp_path, nbflow_home):
    side = tmp_path / "executions.txt"
    cwd = tmp_path / "proj"
    write_chain(cwd, side)
    assert nbflow("run", "pipeline.py", "-e", "local", cwd=cwd, home=nbflow_home).returncode == 0
    executed(side)
    nb = nbformat.read(cwd / "train.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("## Training\nnotes a person adds"))
    nbformat.write(nb, cwd / "train.ipynb")
    res = nbflow("run", "pipeline.py", "-e", "local", "-i", cwd=cwd, home=nbflow_home)
    assert res.returncode == 0, res.stderr
    assert executed(side) == [] and set(states(2).values()) == {"cached"}
    edit_cell(cwd / "train.ipynb", 3, source="import nbflow\nnbflow.save('score', data * C * 2)")
    assert nbflow("run", "pipeline.py", "-e", "local", "-i", cwd=cwd, home=nbflow_home).returncode == 0
    assert executed(side) == ["train", "evaluate"]
    assert whys(3)["train"] == "code changed: train.ipynb Cell 4/4"  # the cell as JupyterLab names it now


RACE = """
import os, time
from nbflow import Pipeline, task

SIDE, GATE = {side!r}, {gate!r}

with Pipeline("race", params={{"n": 2}}) as pipeline:
    @task
    def slow(params):
        open(SIDE, "a").write("slow\\n")
        while not os.path.exists(GATE):  # held until the test opens the gate
            time.sleep(0.05)
        return params["n"]

    slow()
"""


def test_an_attempt_still_running_in_another_run_is_never_reused(tmp_path, nbflow_home):
    """Run 2 (n=3) is running `slow` when run 3 (n=3, incremental) decides it: the only finished
    success is run 1's (n=2), so run 3 runs it too, saying why; nothing of run 2 is reused."""
    side, gate = tmp_path / "executions.txt", tmp_path / "gate"
    path = tmp_path / "race.py"
    path.write_text(RACE.format(side=str(side), gate=str(gate)))
    gate.write_text("open")
    assert api.run_pipeline(load_pipeline(path), executor="inline").ok  # run 1, n=2
    gate.unlink()
    executed(side)
    first = api.create_run(load_pipeline(path), params={"n": 3}, incremental=True)
    second = api.create_run(load_pipeline(path), params={"n": 3}, incremental=True)
    results: dict[int, str] = {}

    def drive(run_id: int) -> None:
        results[run_id] = api.drive_run(load_pipeline(path), run_id, executor="local").state.value

    threads = {first: threading.Thread(target=drive, args=(first,))}
    threads[first].start()
    deadline = time.monotonic() + 60
    while states(first)["slow"] != "running":  # run 2's attempt is in flight ...
        assert time.monotonic() < deadline, states(first)
        time.sleep(0.05)
    threads[second] = threading.Thread(target=drive, args=(second,))
    threads[second].start()  # ... when run 3 decides
    while states(second)["slow"] not in ("running", "cached", "success"):
        assert time.monotonic() < deadline, states(second)
        time.sleep(0.05)
    gate.write_text("open")
    for thread in threads.values():
        thread.join(120)
    assert results == {first: "success", second: "success"}
    assert executed(side) == ["slow", "slow"]
    assert whys(second)["slow"] == "parameter n: 2 -> 3" and states(second)["slow"] == "success"
    assert api.load_output(second, "slow") == 3
