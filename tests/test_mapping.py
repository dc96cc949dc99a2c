"""Dynamic task mapping: ``.expand`` / ``.partial`` / ``expand=`` / ``.expand_inputs`` (nbflow.mapspec,
nbflow.expansion), on ``inline``, ``local`` and a real Dask cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbflow import api
from nbflow.exceptions import DefinitionError
from nbflow.loader import load_pipeline
from nbflow.mapspec import MapError, points, split_instance_id
from tests.conftest import make_notebook

MAPPED = """
import os
from pathlib import Path
from nbflow import Pipeline, task

FLAKY = Path(os.environ.get("FLAKY_MARK", "/nonexistent"))

with Pipeline("mapped", params={"grid": [1, 2, 3]}) as pipeline:
    @task
    def make_grid():
        return [1, 2, 3, 4]

    @task(retries=1)
    def train(data, C):
        if (data, C) == (2, 3) and not FLAKY.exists():   # the first try of one instance fails, its retry succeeds
            FLAKY.write_text("x")
            raise RuntimeError("flaky")
        return data * C

    @task
    def square(x):
        if x == 8:
            raise ValueError("no eights")
        return x * x

    @task(trigger_rule="all_done")
    def gather(xs):
        return xs

    @task
    def pair(a, b):
        return f"{a}{b}"

    @task
    def count(xs):
        return len(xs)

    literal = train.partial(data=10).expand(C=[0.5, 1, 2])
    from_upstream = train.partial(data=2).expand(C=make_grid())     # a list known at run time
    squares = square.expand(x=from_upstream)                        # a branch per instance
    gather(squares)
    crossed = pair.expand(a=["x", "y"], b=[1, 2, 3])
    zipped = pair.expand(a=["x", "y"], b=[1, 2], zip=True)
    count(pair.expand(a=[], b=[1]))                                 # maps to zero instances
    from_param = train.partial(data=1).expand(C=pipeline.params.grid)
    gather_all = gather(crossed)
"""


def states(result) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in result.tasks}


def run_mapped(write_pipeline, executor: str, tmp_path: Path, **kwargs):
    os.environ["FLAKY_MARK"] = str(tmp_path / "flaky")
    try:
        return api.run_pipeline(load_pipeline(write_pipeline(MAPPED)), executor=executor, **kwargs)
    finally:
        del os.environ["FLAKY_MARK"]


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_mapped_tasks_values_order_branches_and_the_list_downstream(nbflow_home, write_pipeline, tmp_path, executor):
    result = run_mapped(write_pipeline, executor, tmp_path)
    s = states(result)
    # one instance per value, in map-index order, each its own task instance
    assert api.load_output(result.run_id, "train") == [5.0, 10, 20]
    assert [s[f"train[{i}]"] for i in range(3)] == ["success"] * 3
    # a list produced at run time; one instance of it failed on its first try and was retried
    assert api.load_output(result.run_id, "train__1") == [2, 4, 6, 8]
    tries = {t["task_id"]: t["try_number"] for t in result.tasks}
    assert tries["train__1[2]"] == 2 and tries["train__1[0]"] == 1
    # a branch per instance: square[3] (x=8) fails alone; gather (all_done) gets the others in order
    assert s["square[3]"] == "failed" and s["square"] == "failed"
    assert [s[f"square[{i}]"] for i in range(3)] == ["success"] * 3
    assert api.load_output(result.run_id, "gather") == [4, 16, 36]
    # cross product (last name fastest), zip, empty list, a list from a run parameter
    assert api.load_output(result.run_id, "pair") == ["x1", "x2", "x3", "y1", "y2", "y3"]
    assert api.load_output(result.run_id, "pair__1") == ["x1", "y2"]
    assert s["pair__2"] == "success" and api.load_output(result.run_id, "count") == 0
    assert api.load_output(result.run_id, "train__2") == [1, 2, 3]
    assert api.load_output(result.run_id, "gather__1") == ["x1", "x2", "x3", "y1", "y2", "y3"]
    # the instances' values are stored for people to read
    rows = {t["task_id"]: t for t in result.tasks}
    assert rows["pair[4]"]["map_values"] == {"a": "y", "b": 2} and rows["pair[4]"]["map_index"] == 4
    assert rows["pair"]["map_count"] == 6 and rows["train__1[1]"]["map_values"] == {"C": 2}
    assert rows["pair[4]"]["map_parent"] == "pair"
    # each instance has its own log
    assert "flaky" in api.read_log(result.run_id, "train__1[2]", try_number=1)
    # a failed instance fails its mapped task, and so the run, though gather (all_done) succeeded last
    assert result.state.value == "failed"


def test_instances_are_listed_after_their_mapped_task(nbflow_home, write_pipeline, tmp_path):
    result = run_mapped(write_pipeline, "inline", tmp_path)
    ids = [t["task_id"] for t in result.tasks]
    at = ids.index("pair")
    assert ids[at : at + 7] == ["pair", *(f"pair[{i}]" for i in range(6))]


def test_mapped_notebooks_on_local_a_branch_each_and_rerun_runs_only_the_failed_instance(
    nbflow_home, write_pipeline, tmp_path
):
    folder = tmp_path / "pipelines"
    make_notebook(
        folder / "train.ipynb",
        [
            ("C = 1.0\ndata = 0", ["parameters"]),
            "import nbflow\nnbflow.save('model', {'C': C, 'data': data})\nnbflow.metric('accuracy', C / (1 + C))",
        ],
    )
    make_notebook(
        folder / "evaluate.ipynb",
        [
            ("model = None", ["parameters"]),
            "import nbflow, os\nm = nbflow.load(model)['model']\n"
            "assert m['C'] != 10.0 or os.path.exists(os.environ['FIXED_MARK']), 'C=10 is broken'\n"
            "nbflow.save('score', m['C'] * 2)",
        ],
    )
    source = """
    from nbflow import Pipeline, task, notebook

    @task
    def data():
        return 5

    @task(trigger_rule="all_done")
    def pick(scores):
        return [s["score"] for s in scores]

    with Pipeline("nbmap") as pipeline:
        models = notebook("train.ipynb", inputs={"data": data()}, expand={"C": [0.1, 1.0, 10.0]})
        scores = notebook("evaluate.ipynb", inputs={"model": models}).expand_inputs("model")
        pick(scores)
    """
    os.environ["FIXED_MARK"] = str(tmp_path / "fixed")
    try:
        p = load_pipeline(write_pipeline(source))
        result = api.run_pipeline(p, executor="local", parallelism=2)
        s = states(result)
        assert [s[f"train[{i}]"] for i in range(3)] == ["success"] * 3
        assert [s[f"evaluate[{i}]"] for i in range(3)] == ["success", "success", "failed"]
        assert api.load_output(result.run_id, "pick") == [0.2, 2.0]
        rows = {t["task_id"]: t for t in result.tasks}
        assert rows["evaluate[2]"]["map_values"] == {"model": "<train[2]>"}
        assert "C=10 is broken" in rows["evaluate[2]"]["error"]
        # each instance has its own output notebook, with its own parameter
        outputs = {t: rows[t]["output_uri"] for t in ("train[0]", "train[2]")}
        assert outputs["train[0]"] != outputs["train[2]"]
        assert "C = 10.0" in Path(outputs["train[2]"]).read_text()
        # metrics are recorded per instance
        data = api.compare([result.run_id], task="train")
        assert [row["map_index"] for row in data["runs"]] == [0, 1, 2]
        assert [row["params"]["C"] for row in data["runs"]] == [0.1, 1.0, 10.0]
        assert [round(row["metrics"]["train.accuracy"], 3) for row in data["runs"]] == [0.091, 0.5, 0.909]

        (tmp_path / "fixed").write_text("x")
        again = api.rerun(result.run_id, executor="local")
        s2 = states(again)
        tries = {t["task_id"]: t["try_number"] for t in again.tasks}
        assert s2["evaluate[2]"] == "success" and tries["evaluate[2]"] == 2
        assert tries["evaluate[0]"] == 1 and tries["train[2]"] == 1  # kept, not run again
        assert api.load_output(again.run_id, "pick") == [0.2, 2.0, 20.0]
    finally:
        del os.environ["FIXED_MARK"]


def test_mapped_tasks_on_a_real_dask_cluster(nbflow_home, write_pipeline, tmp_path):
    result = run_mapped(write_pipeline, "dask", tmp_path, parallelism=2)
    s = states(result)
    assert api.load_output(result.run_id, "train__1") == [2, 4, 6, 8]
    assert s["square[3]"] == "failed" and api.load_output(result.run_id, "gather") == [4, 16, 36]
    assert api.load_output(result.run_id, "pair__1") == ["x1", "y2"]
    hosts = {t["hostname"] for t in result.tasks if split_instance_id(t["task_id"])}
    assert hosts and None not in hosts


def test_max_active_tasks_holds_for_instances(nbflow_home, write_pipeline):
    source = """
    import time
    from nbflow import Pipeline, task

    @task
    def slow(i):
        time.sleep(0.3)
        return i

    with Pipeline("limited", max_active_tasks=1) as pipeline:
        slow.expand(i=[1, 2, 3])
    """
    result = api.run_pipeline(load_pipeline(write_pipeline(source)), executor="local", parallelism=2)
    assert result.ok
    spans = sorted((a["start_date"], a["end_date"]) for a in api.run_details(result.run_id)["attempts"])
    assert len(spans) == 3
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))  # never two at once


BAD = """
from nbflow import Pipeline, task

@task
def give(x):
    return x

@task
def use(v):
    return v

with Pipeline("bad", params={"grid": 5}) as pipeline:
    use.expand(v=give(7))                          # an upstream value that is not a list
    use.expand(v=list(range(5)))                   # more than max_map_length (3 here)
    use.expand(v=pipeline.params.grid)             # a parameter that is not a list
"""


def test_values_that_cannot_be_mapped_fail_the_task_naming_it_the_type_and_the_limit(
    nbflow_home, write_pipeline, monkeypatch
):
    monkeypatch.setenv("NBFLOW_MAX_MAP_LENGTH", "3")
    api.reset()
    result = api.run_pipeline(load_pipeline(write_pipeline(BAD)), executor="inline")
    rows = {t["task_id"]: t for t in result.tasks}
    assert not result.ok
    assert rows["use"]["state"] == "failed" and rows["use"]["reason"] == "map_error"
    assert "task 'use' maps over v, which is a int (7), not a list" in rows["use"]["error"]
    assert "maps over 5 values of v, more than max_map_length 3" in rows["use__1"]["error"]
    assert "NBFLOW_MAX_MAP_LENGTH" in rows["use__1"]["error"]
    assert "maps over v, which is a int (5)" in rows["use__2"]["error"]
    assert not any(split_instance_id(t) for t in rows)  # nothing was expanded


def test_definition_errors_name_the_task_and_the_fix(nbflow_home, write_pipeline):
    cases = {
        "use.expand(v=5)": "task 'use' maps over v, a int (5), not a list",
        "use.expand(v=[1, 2], w=[1], zip=True)": "task 'use' zips lists of unequal lengths: v has 2, w has 1",
        "use.partial(v=1).expand(v=[2])": "v given both to partial() and to expand()",
        "use.expand()": "task 'use' maps over nothing",
    }
    for line, message in cases.items():
        source = f"from nbflow import Pipeline, task\n\n@task\ndef use(v, w=0):\n    return v\n\nwith Pipeline('d'):\n    {line}\n"
        with pytest.raises(DefinitionError) as err:
            load_pipeline(write_pipeline(source, name=f"p{abs(hash(line))}.py"))
        assert message in str(err.value), (line, str(err.value))


def test_points_cross_product_zip_and_limits():
    assert points("t", {"a": [1, 2], "b": ["x", "y"]}, False, 10) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert points("t", {"a": [1, 2], "b": ["x", "y"]}, True, 10) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert points("t", {"a": []}, False, 10) == []
    with pytest.raises(MapError, match="maps over 6 points .* more than max_map_length 5"):
        points("t", {"a": [1, 2, 3], "b": [1, 2]}, False, 5)
    with pytest.raises(MapError, match="zips lists of unequal lengths: a has 2, b has 1"):
        points("t", {"a": [1, 2], "b": [1]}, True, 5)
    assert split_instance_id("train[12]") == ("train", 12) and split_instance_id("train") is None


def test_cli_lists_instances_with_their_values(nbflow_home, write_pipeline, tmp_path):
    path = write_pipeline(MAPPED)
    env = {**os.environ, "NBFLOW_HOME": str(nbflow_home), "FLAKY_MARK": str(tmp_path / "flaky")}
    run = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "inline"], capture_output=True, text=True, env=env
    )
    assert "train                mapped into 3 instances" in run.stdout
    assert "/18]" not in run.stdout  # the counter grows with the instances
    tasks = subprocess.run(
        [sys.executable, "-m", "nbflow", "tasks", "1"], capture_output=True, text=True, env=env
    ).stdout
    assert "pair[4] (a=y, b=2)" in tasks
    assert "train__1[1] (C=2)" in tasks  # an item of an upstream list shows its value
    line = next(line for line in tasks.splitlines() if line.startswith("pair "))
    assert "6 mapped" in line


RESUMED = """
from nbflow import Pipeline, task

with Pipeline("resumed") as pipeline:
    @task
    def grid():
        return [1, 2, 3, 4]

    @task
    def square(x):
        return x * x

    @task
    def total(xs):
        return sum(xs)

    total(square.expand(x=grid()))
"""


def test_a_driver_that_stops_mid_mapping_is_resumed_by_the_next_one(nbflow_home, write_pipeline):
    """The next driver expands the running mapped task again from its stored rows: finished
    instances keep their tries, the one left in flight is a lost try run again, and the
    downstream task gets every value in map-index order."""
    from nbflow.engine import RunEngine
    from nbflow.executors import get_executor

    p = load_pipeline(write_pipeline(RESUMED))
    store = api.open_store()
    run_id = api.create_run(p, executor="inline", store=store)
    with get_executor("inline") as ex:
        engine = RunEngine(store, p, run_id, ex)
        engine.start()
        done = lambda: {t["task_id"]: t["state"] for t in store.task_instances(run_id)}  # noqa: E731
        while done().get("square[1]") != "success":
            engine.step(ex.poll(0.1))
        # this driver stops here: square is running, square[2] may be queued, total pending
    left = done()
    assert left["square"] == "running" and left["total"] == "pending"
    result = api.drive_run(p, run_id, executor="inline", store=store)
    assert result.ok, result.tasks
    assert api.load_output(run_id, "total") == 1 + 4 + 9 + 16
    tries = {t["task_id"]: t["try_number"] for t in result.tasks}
    assert tries["square[0]"] == 1 and tries["square[1]"] == 1  # not run again
    assert [t["task_id"] for t in result.tasks].count("square[3]") == 1  # no duplicate rows


TRAIN_ALL = """
from nbflow import Pipeline, task

@task
def train(C):
    return C * 2

@task
def gather(xs):
    return xs

with Pipeline({name!r}, params={{"grid": {grid!r}}}, incremental={incremental!r}) as pipeline:
    gather(train.expand(C=pipeline.params.grid))
"""


def test_an_incremental_rerun_reuses_each_unchanged_instance(nbflow_home, write_pipeline):
    p = load_pipeline(write_pipeline(TRAIN_ALL.format(name="incr_map", grid=[1, 2, 3], incremental=True)))
    first = api.run_pipeline(p, executor="inline")
    assert first.ok and api.load_output(first.run_id, "gather") == [2, 4, 6]
    again = api.run_pipeline(p, params={"grid": [1, 2, 3, 4]}, executor="inline")
    s = states(again)
    assert [s[f"train[{i}]"] for i in range(4)] == ["cached", "cached", "cached", "success"]
    assert s["gather"] == "success" and api.load_output(again.run_id, "gather") == [2, 4, 6, 8]  # its input changed
    third = api.run_pipeline(p, params={"grid": [1, 2, 3, 4]}, executor="inline")
    assert set(states(third).values()) <= {"cached", "success"} and states(third)["gather"] == "cached"


def test_only_a_task_downstream_of_a_mapped_task_gets_the_instances_values(nbflow_home, write_pipeline):
    """--only gather (its mapped upstream left out): gather gets the list the newest success of
    the mapped task's instances made, in map-index order (it used to get None)."""
    p = load_pipeline(write_pipeline(TRAIN_ALL.format(name="only_map", grid=[3, 1, 2], incremental=False)))
    assert api.run_pipeline(p, executor="inline").ok
    only = api.run_pipeline(p, executor="inline", only=["gather"])
    assert only.ok and set(states(only)) == {"gather"}
    assert api.load_output(only.run_id, "gather") == [6, 2, 4]  # in map-index order, as in the full run


def test_a_notebook_downstream_of_a_mapped_task_loads_the_list(nbflow_home, write_pipeline, tmp_path):
    make_notebook(
        tmp_path / "pipelines" / "report.ipynb",
        [
            ("scores = None", ["parameters"]),
            "import nbflow\nvalues = nbflow.load(scores)\nnbflow.save('n', len(values))",
        ],
    )
    source = """
    from nbflow import Pipeline, task, notebook

    @task
    def score(C):
        return {"C": C, "weights": list(range(50))}   # not small JSON: the notebook gets references

    with Pipeline("nb_reduce") as pipeline:
        notebook("report.ipynb", inputs={"scores": score.expand(C=[1, 2, 3])})
    """
    result = api.run_pipeline(load_pipeline(write_pipeline(source)), executor="inline")
    assert result.ok, result.tasks
    assert api.load_output(result.run_id, "report") == {"n": 3}


def test_dag_show_names_what_a_task_maps_over(nbflow_home, write_pipeline):
    path = write_pipeline(MAPPED)
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "dag", "show", str(path)], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("pair__1 "))
    assert line.endswith("mapped over a, b"), line
