"""Issue 16, items 1 and 3: skip and branch, setup and teardown, as Airflow does them.

Airflow's example DAGs (translated in tests/airflow_examples/) run through the real `nbflow`
command and end in the task states Airflow documents; the rules and the task kinds are checked
one by one beside them (inline executor; real kernels for notebooks and cell tasks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbflow import api
from nbflow.exceptions import DefinitionError
from nbflow.loader import load_file, load_pipeline
from nbflow.rules import decide, run_outcome
from nbflow.states import RunState, TaskState
from tests.conftest import make_notebook as make_cell_notebook

EXAMPLES = Path(__file__).parent / "airflow_examples"
S, C, F, U, K = TaskState.SUCCESS, TaskState.CACHED, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED


def nbflow_cli(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NBFLOW_HOME": str(home), "PYTHONIOENCODING": "utf-8"}
    env.pop("NBFLOW_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "nbflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )


def run_example(name: str, tmp_path: Path, home: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Copy an example into a folder of its own, run it with the real CLI, return its task rows."""
    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    path = Path(shutil.copy(EXAMPLES / f"{name}.py", folder))
    res = nbflow_cli("run", str(path), *extra, home=home, cwd=folder)
    details = api.run_details(1)
    return res, {t["task_id"]: t for t in details["tasks"]}


def states(rows: dict) -> dict[str, str]:
    return {tid: r["state"] for tid, r in rows.items()}


# -- Airflow's example DAGs through the real CLI ---------------------------------------------------


def test_example_branch_operator(tmp_path, nbflow_home):
    # on the local executor: the branch's value (a name, and a handle) crosses a process
    res, rows = run_example("example_branch_operator", tmp_path, nbflow_home, "--executor", "local", "-p", "seed=5")
    assert res.returncode == 0, res.stdout + res.stderr
    got = states(rows)
    chosen = [o for o in "abcd" if got[f"branch_{o}"] == "success"]
    assert len(chosen) == 1, got
    for o in "abcd":
        # Airflow: the branches not chosen are skipped, and so are their all_success followers
        want = "success" if o in chosen else "skipped"
        assert got[f"branch_{o}"] == want and got[f"follow_{o}"] == want
    assert "not chosen by branch branching" in rows[f"branch_{'a' if chosen != ['a'] else 'b'}"]["error"]
    assert got["join"] == "success"  # none_failed_min_one_success: one success, the rest skipped
    ext = [o for o in "abcd" if got[f"ext_py_{o}"] == "success"]  # this branch returned a handle
    assert len(ext) == 1 and sum(got[f"ext_py_{o}"] == "skipped" for o in "abcd") == 3
    assert got["join_ext_python"] == "success" and got["run_this_first"] == got["branching"] == "success"
    assert "example_branch_operator: success" in res.stdout


def test_example_short_circuit_decorator(tmp_path, nbflow_home):
    res, rows = run_example("example_short_circuit_decorator", tmp_path, nbflow_home, "--executor", "inline")
    assert res.returncode == 0, res.stdout + res.stderr
    got = states(rows)
    assert got["condition_is_true"] == got["true_1"] == got["true_2"] == "success"
    # a falsy short-circuit succeeds and skips everything downstream (ignore_downstream_trigger_rules)
    assert got["condition_is_false"] == "success" and got["false_1"] == got["false_2"] == "skipped"
    # ignore_downstream_trigger_rules=False: only task_4 is skipped by it; task_6 by its all_success
    # rule; task_7 (all_done) runs
    assert got["task_4"] == "skipped" and "short-circuit short_circuit" in rows["task_4"]["error"]
    assert got["task_6"] == "skipped" and rows["task_6"]["try_number"] == 0
    assert [got[f"task_{i}"] for i in (1, 2, 3, 5, 7)] == ["success"] * 5
    assert got["short_circuit"] == "success"


def test_example_setup_teardown_taskflow_work_fails(tmp_path, nbflow_home):
    res, rows = run_example("example_setup_teardown_taskflow", tmp_path, nbflow_home, "--executor", "inline")
    # the work failed: the run fails and the command exits non-zero, though the teardowns succeeded last
    assert res.returncode == 1, res.stdout + res.stderr
    assert "example_setup_teardown_taskflow: failed" in res.stdout
    got = states(rows)
    assert got["my_second_task"] == "failed"
    assert got["my_first_task"] == "success" and got["my_third_task"] == "success"  # setup, then its teardown
    assert "Hello 3" in api.read_log(1, "my_third_task")
    assert got["outer_teardown"] == got["inner_teardown"] == "success"
    assert api.run_details(1)["run"]["state"] == "failed"
    # the teardown ran after the failure, and it is the last task of its chain
    assert rows["my_third_task"]["start_date"] >= rows["my_second_task"]["end_date"]
    show = nbflow_cli("dag", "show", "example_setup_teardown_taskflow.py", home=nbflow_home, cwd=tmp_path / "dags")
    assert show.returncode == 0, show.stderr
    roles = {line.split()[0]: line for line in show.stdout.splitlines()[1:-1]}
    assert "(setup)" in roles["my_first_task"] and "(teardown)" in roles["my_third_task"]
    assert "(setup)" not in roles["my_second_task"] and "(teardown)" not in roles["my_second_task"]


def test_example_sensors_soft_fail(tmp_path, nbflow_home):
    res, rows = run_example("example_sensors", tmp_path, nbflow_home, "--executor", "inline")
    assert res.returncode == 0, res.stdout + res.stderr
    got = states(rows)
    soft = [
        "timeout_after_second_date_in_the_future",
        "timeout_after_second_date_in_the_future_async",
        "Sensor_fails_after_3_seconds",
        "failure_timeout_sensor_python",
        "week_day_sensor_failing_on_timeout",
    ]
    for tid in soft:  # soft_fail: skipped at the timeout, with the reason; never failed
        assert got[tid] == "skipped", (tid, got)
        assert "sensor timed out after 1s" in rows[tid]["error"] and rows[tid]["reason"] == "skipped"
    assert all(state == "success" for tid, state in got.items() if tid not in soft), got
    # print_date_in_bash (none_failed) ran although five of its upstream tasks were skipped
    assert got["print_date_in_bash"] == "success"
    tasks = nbflow_cli("tasks", "1", home=nbflow_home, cwd=tmp_path)
    assert "skipped" in tasks.stdout and "never became true" in tasks.stdout


# -- rules ------------------------------------------------------------------------------------------


def test_trigger_rules_with_skipped_upstreams():
    # Airflow: a skipped upstream skips an all_success task, never upstream_failed
    assert decide("all_success", [S, K]) is K and decide("all_success", [K, F]) is U
    assert decide("none_failed", [S, K]) is None and decide("none_failed", [K, K]) is None
    assert decide("none_failed_min_one_success", [S, K, K]) is None
    assert decide("none_failed_min_one_success", [K, K]) is K
    assert decide("none_failed_min_one_success", [S, K, U]) is U
    assert decide("none_skipped", [S, C]) is None and decide("none_skipped", [S, K]) is K
    assert decide("none_skipped", [F]) is None  # failures are not skips: it runs
    assert decide("all_skipped", [K, K]) is None and decide("all_skipped", [K, S]) is K
    assert decide("all_skipped", [K, F]) is K
    assert decide("one_success", [K, K]) is K and decide("one_success", [K, F]) is U
    assert decide("one_done", [K, F]) is None and decide("one_done", [K, K]) is K
    assert decide("all_failed", [F, K]) is K and decide("one_failed", [K, S]) is K
    assert decide("all_done", [K, F]) is None


def test_teardown_rule_and_run_outcome():
    rule = "all_done_setup_success"
    assert decide(rule, [F, S], setups=[S]) is None  # the work failed: the teardown still runs
    assert decide(rule, [U, F], setups=[F]) is U  # its setup never succeeded
    assert decide(rule, [K, K], setups=[K]) is K  # its setup was skipped
    assert decide(rule, [K, S], setups=[K, S]) is None  # one setup ran
    assert decide(rule, [F]) is None  # no setup: all_done
    # a failure fails the run, even when a succeeded all_done task or a teardown is the last one
    assert run_outcome({"work": F, "cleanup": S}) is RunState.FAILED
    assert run_outcome({"s": S, "work": F, "t": S}, teardowns={"t"}) is RunState.FAILED
    assert run_outcome({"s": S, "work": S, "t": F}, teardowns={"t"}) is RunState.SUCCESS
    assert run_outcome({"a": K, "b": S, "c": K}) is RunState.SUCCESS  # skipped is never a failure


# -- task kinds, inline -----------------------------------------------------------------------------

SKIPS = """
import nbflow
from nbflow import Pipeline, task, shell

with Pipeline("skips") as pipeline:
    @task(retries=2)
    def no_data():
        raise nbflow.Skip("no new data today")

    @task
    def after(x):
        return x

    @task(trigger_rule="none_failed")
    def report():
        return "done"

    n = after(no_data())
    n >> report()
    shell("exit 99", name="one_code", skip_on_exit_code=99)
    shell("exit 4", name="listed_code", skip_on_exit_code=[3, 4], retries=1)
    shell("exit 5", name="other_code", skip_on_exit_code=[3, 4])
    shell("echo fine", name="zero_listed", skip_on_exit_code=0)

    @task
    def value(x):
        if x == 2:
            raise nbflow.Skip(f"x={x} is not needed")
        return x * 10

    @task(trigger_rule="all_done")
    def gather(values):
        return values

    gather(value.expand(x=[1, 2, 3]))

    @task
    def never(x):
        raise nbflow.Skip("none")

    never.options_(name="all_skip").expand(x=[1, 2])
"""


def test_skip_function_exit_codes_and_mapped_instances(nbflow_home, write_pipeline):
    result = api.run_pipeline(load_pipeline(write_pipeline(SKIPS)), executor="inline")
    rows = {t["task_id"]: t for t in result.tasks}
    got = {tid: r["state"] for tid, r in rows.items()}
    # nbflow.Skip in a function: skipped with its reason at once, retries unused; all_success after it skipped
    assert got["no_data"] == "skipped" and rows["no_data"]["try_number"] == 1
    assert rows["no_data"]["reason"] == "skipped" and rows["no_data"]["error"] == "no new data today"
    assert got["after"] == "skipped" and rows["after"]["try_number"] == 0
    assert got["report"] == "success"  # none_failed runs after skipped upstream tasks
    # skip_on_exit_code: an int, a list (retries unused), a code not listed fails, 0 listed skips a success
    assert got["one_code"] == got["listed_code"] == "skipped" and rows["listed_code"]["try_number"] == 1
    assert "exited with code 4 (skip_on_exit_code)" in rows["listed_code"]["error"]
    assert got["other_code"] == "failed" and got["zero_listed"] == "skipped"
    # a mapped task's instances skip alone; all_done downstream gets the values of the others
    assert [got[f"value[{i}]"] for i in range(3)] == ["success", "skipped", "success"]
    assert got["value"] == "success" and api.load_output(result.run_id, "gather") == [10, 30]
    assert got["all_skip"] == "skipped"  # every instance skipped
    # the attempt records carry the reason (the REST run detail serves these rows)
    attempts = {a["task_id"]: a for a in api.run_details(result.run_id)["attempts"]}
    assert attempts["no_data"]["state"] == "skipped" and attempts["no_data"]["message"] == "no new data today"
    assert attempts["no_data"]["reason"] == "skipped" and attempts["no_data"]["traceback"] is None
    assert result.state is RunState.FAILED  # other_code failed; the skips alone would not fail it


SKIPS_ONLY = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("only_skips") as pipeline:
    @task
    def nothing():
        raise nbflow.Skip("nothing to do")

    @task(trigger_rule="all_done")
    def cleanup():
        return 1

    nothing() >> cleanup()
"""


def test_a_run_of_skips_succeeds_and_a_failure_before_an_all_done_leaf_fails(nbflow_home, write_pipeline):
    assert api.run_pipeline(load_pipeline(write_pipeline(SKIPS_ONLY)), executor="inline").state is RunState.SUCCESS
    failing = SKIPS_ONLY.replace('raise nbflow.Skip("nothing to do")', 'raise ValueError("broken")')
    result = api.run_pipeline(load_pipeline(write_pipeline(failing, name="f.py")), executor="inline")
    # the trap: the all_done leaf succeeded, yet the work failed, so the run fails
    assert {t["task_id"]: t["state"] for t in result.tasks} == {"nothing": "failed", "cleanup": "success"}
    assert result.state is RunState.FAILED


BRANCHES = """
from nbflow import Pipeline, task

with Pipeline("branches", params={"pick": "names"}) as pipeline:
    @task
    def leaf(tag):
        return tag

    a, b, c = (leaf.options_(name=n)(n) for n in "abc")

    @task(branch=True)
    def by_names(params):
        return {"names": ["a", "c"], "none": None, "stranger": "d", "bad": 42}[params["pick"]]

    by_names() >> [a, b, c]

    h1, h2 = leaf.options_(name="h1")(1), leaf.options_(name="h2")(2)

    @task(branch=True)
    def by_handle():
        return h2

    by_handle() >> [h1, h2]

    d = leaf.options_(name="d")("d")
    @task(trigger_rule="none_failed_min_one_success")
    def join():
        return "joined"

    [a, b, c] >> join()
"""


@pytest.mark.parametrize(
    "pick, want",
    [
        ("names", {"a": "success", "b": "skipped", "c": "success", "join": "success"}),
        ("none", {"a": "skipped", "b": "skipped", "c": "skipped", "join": "skipped"}),
    ],
)
def test_branch_returning_names_and_handles(nbflow_home, write_pipeline, pick, want):
    result = api.run_pipeline(load_pipeline(write_pipeline(BRANCHES)), params={"pick": pick}, executor="inline")
    got = {t["task_id"]: t["state"] for t in result.tasks}
    assert {k: got[k] for k in want} == want
    assert got["h1"] == "skipped" and got["h2"] == "success"  # a handle returned by the branch
    assert got["by_names"] == "success" and result.state is RunState.SUCCESS
    if pick == "names":
        # a re-run of a task the branch did not choose: the branch's saved choice still skips it
        again = api.rerun(result.run_id, tasks=["b", "h1"], executor="inline")
        rows = {t["task_id"]: t for t in again.tasks}
        assert rows["b"]["state"] == rows["h1"]["state"] == "skipped" and rows["join"]["state"] == "success"
        assert rows["by_names"]["try_number"] == 1 and rows["join"]["try_number"] == 2
        # a plain re-run clears what failed: skipped is no failure, nothing runs again
        assert api.clear_run(result.run_id, dry_run=True) == []


@pytest.mark.parametrize(
    "pick, text",
    [
        ("stranger", "chose d, not directly downstream of it; it may choose among: a, b, c"),
        ("bad", "returned 42: a branch names the tasks to follow by id or handle"),
    ],
)
def test_a_wrong_branch_choice_fails_naming_the_choices(nbflow_home, write_pipeline, pick, text):
    result = api.run_pipeline(load_pipeline(write_pipeline(BRANCHES)), params={"pick": pick}, executor="inline")
    rows = {t["task_id"]: t for t in result.tasks}
    assert rows["by_names"]["state"] == "failed" and rows["by_names"]["reason"] == "branch_error"
    assert text in rows["by_names"]["error"]
    assert {rows[t]["state"] for t in "abc"} == {"upstream_failed"} and result.state is RunState.FAILED


SETUPS = """
import os
from nbflow import Pipeline, task

with Pipeline("scoped", params={"flag": ""}) as pipeline:
    @task(setup=True)
    def create():
        return "cluster-1"

    @task
    def work(cluster, params):
        if params["flag"] and not os.path.exists(params["flag"]):
            raise RuntimeError("no flag yet")
        return f"worked on {cluster}"

    @task(teardown=True)
    def delete():
        return "deleted"

    @task
    def unrelated():
        return 0

    c = create()
    w = work(c)
    w >> delete.options_(setups=[c])()
    unrelated()
"""


def test_only_and_rerun_bring_setups_and_teardowns(nbflow_home, write_pipeline, tmp_path):
    pipeline = load_pipeline(write_pipeline(SETUPS))
    assert pipeline.tasks["delete"].is_teardown and pipeline.tasks["create"].is_setup
    assert pipeline.tasks["delete"].trigger_rule == "all_done_setup_success"
    # --only work runs its setup and its teardown too
    only = api.run_pipeline(pipeline, only=["work"], executor="inline")
    assert sorted(t["task_id"] for t in only.tasks) == ["create", "delete", "work"]
    assert only.state is RunState.SUCCESS
    flag = tmp_path / "flag"
    failed = api.run_pipeline(pipeline, params={"flag": str(flag)}, executor="inline")
    got = {t["task_id"]: t["state"] for t in failed.tasks}
    assert got == {"create": "success", "work": "failed", "delete": "success", "unrelated": "success"}
    assert failed.state is RunState.FAILED
    # a re-run clears the failed work with its setup and teardown (not the unrelated task)
    assert set(api.clear_run(failed.run_id, dry_run=True)) == {"create", "work", "delete"}
    flag.write_text("ok")
    again = api.rerun(failed.run_id, executor="inline")
    tries = {t["task_id"]: (t["state"], t["try_number"]) for t in again.tasks}
    assert tries["create"] == ("success", 2) and tries["delete"] == ("success", 2) and tries["work"][0] == "success"
    assert tries["unrelated"] == ("success", 1) and again.state is RunState.SUCCESS


def test_teardown_after_a_failed_or_skipped_setup(nbflow_home, write_pipeline):
    source = SETUPS.replace('return "cluster-1"', "raise RuntimeError('no cluster')")
    result = api.run_pipeline(load_pipeline(write_pipeline(source)), executor="inline")
    got = {t["task_id"]: t["state"] for t in result.tasks}
    # Airflow: no setup succeeded, so the teardown does not run (upstream_failed)
    assert got["create"] == "failed" and got["work"] == "upstream_failed" and got["delete"] == "upstream_failed"
    assert result.state is RunState.FAILED
    source = SETUPS.replace('return "cluster-1"', "import nbflow; raise nbflow.Skip('no cluster needed')")
    result = api.run_pipeline(load_pipeline(write_pipeline(source, name="skip.py")), executor="inline")
    got = {t["task_id"]: t["state"] for t in result.tasks}
    assert got["create"] == got["work"] == got["delete"] == "skipped" and result.state is RunState.SUCCESS


@pytest.mark.parametrize(
    "body, text",
    [
        ("@task(setup=True, teardown=True)\ndef f(): pass\nf()", "is both a setup and a teardown"),
        ("@task(setups=[])\ndef f(): pass\nf()", "names setups= but is no teardown"),
        ("@task(branch=True, short_circuit=True)\ndef f(): pass\nf()", "is both a branch and a short-circuit"),
        ("@task\ndef f(): pass\nf().as_teardown(setups=['x'])", "setups= holds 'x', not a task"),
        ("shell('exit 1', skip_on_exit_code='99')", "skip_on_exit_code of shell task"),
    ],
)
def test_definition_errors_name_the_task_and_the_fix(write_pipeline, body, text):
    source = "from nbflow import Pipeline, task, shell\n\nwith Pipeline('bad') as pipeline:\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    with pytest.raises(DefinitionError) as err:
        load_pipeline(write_pipeline(source))
    assert text in str(err.value) and err.value.hint


# -- notebooks and cell tasks: real kernels ---------------------------------------------------------

NOTEBOOKS = """
from nbflow import Pipeline, notebook, task

with Pipeline("nb_skip_branch") as pipeline:
    quiet = notebook("quiet.ipynb")

    @task
    def after_quiet():
        return 1

    quiet >> after_quiet()

    choose = notebook("choose.ipynb", branch=True)

    @task
    def left():
        return "left"

    @task
    def right():
        return "right"

    choose >> [left(), right()]
"""


def _notebook(path: Path, *cells: str) -> None:
    from nbformat.v4 import new_code_cell, new_notebook

    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells], metadata={"kernelspec": spec}), path)


def test_skip_in_a_notebook_cell_and_a_notebook_branch(nbflow_home, write_pipeline):
    path = write_pipeline(NOTEBOOKS)
    _notebook(path.parent / "quiet.ipynb", "import nbflow\nprint('looking')", "raise nbflow.Skip('nothing new')", "1/0")
    _notebook(path.parent / "choose.ipynb", "import nbflow\nnbflow.save('branch', ['right'])")
    result = api.run_pipeline(load_pipeline(path), executor="inline")
    rows = {t["task_id"]: t for t in result.tasks}
    assert rows["quiet"]["state"] == "skipped" and rows["quiet"]["error"] == "nothing new"
    assert rows["quiet"]["output_uri"]  # the executed notebook is kept, up to the cell that skipped
    assert rows["after_quiet"]["state"] == "skipped"
    assert rows["choose"]["state"] == "success"
    assert rows["left"]["state"] == "skipped" and rows["right"]["state"] == "success"
    assert "not chosen by branch choose (it chose right)" in rows["left"]["error"]
    assert result.state is RunState.SUCCESS


def test_skip_in_a_cell_task(nbflow_home, tmp_path):
    path = make_cell_notebook(
        tmp_path / "cells.ipynb",
        [
            "import nbflow",
            "%%nbflow task check --outputs n\nn = 0\nif n == 0:\n    raise nbflow.Skip('no rows to load')",
            "%%nbflow task load --inputs n\nprint(n)",
        ],
    )
    (pipeline,) = load_file(path).values()
    result = api.run_pipeline(pipeline, executor="inline")
    rows = {t["task_id"]: t for t in result.tasks}
    assert rows["check"]["state"] == "skipped" and rows["check"]["error"] == "no rows to load"
    assert rows["check"]["try_number"] == 1 and rows["load"]["state"] == "skipped"
    assert result.state is RunState.SUCCESS


def test_what_a_cleared_task_brings_with_it():
    from nbflow.setupteardown import setups_of, with_setups_and_teardowns

    rows = {
        "s1": {"id": "s1", "upstream": [], "setup": True},
        "s2": {"id": "s2", "upstream": [], "setup": True},
        "lone": {"id": "lone", "upstream": [], "setup": True},  # a setup without a teardown
        "w1": {"id": "w1", "upstream": ["s1"]},
        "w2": {"id": "w2", "upstream": ["s1", "s2", "lone"]},
        "t1": {"id": "t1", "upstream": ["w1", "s1"], "teardown": True, "setups": ["s1"]},
        "t2": {"id": "t2", "upstream": ["w2"], "teardown": True, "setups": []},  # its setups: found upstream
        "after": {"id": "after", "upstream": ["t2"]},
    }
    assert setups_of(rows, "t2") == ["lone", "s1", "s2"] and setups_of(rows, "t1") == ["s1"]
    # Airflow's clear: a setup upstream whose teardown is downstream (or that has none), with its teardowns
    assert with_setups_and_teardowns(rows, ["w1"]) == {"w1", "s1", "t1", "t2"}
    assert with_setups_and_teardowns(rows, ["w2"]) == {"w2", "s1", "s2", "lone", "t1", "t2"}
    assert with_setups_and_teardowns(rows, ["t1"]) == {"t1", "s1"}  # a teardown brings its setups
    assert with_setups_and_teardowns(rows, ["s2"]) == {"s2", "t2"}  # a setup its teardowns
    assert with_setups_and_teardowns(rows, ["after"]) == {"after"}  # outside every scope
