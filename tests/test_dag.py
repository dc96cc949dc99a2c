"""The pipeline model: edges, graph algorithms, validation errors, fingerprints."""

from __future__ import annotations

import pytest

from nbflow import Pipeline, shell, task
from nbflow.dag import OutputRef, ParamRef, find_cycle, toposort
from nbflow.exceptions import DagCycleError, DefinitionError, DuplicateTaskError, ScheduleError, UnknownTaskError


@task
def one():
    return 1


@task
def add(a, b=0):
    return a + b


def test_toposort_is_stable_and_respects_edges():
    ups = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": set()}
    order = toposort(ups)
    assert order == ["a", "e", "b", "c", "d"]
    with pytest.raises(ValueError, match="cycle"):
        toposort({"a": {"b"}, "b": {"a"}})


def test_find_cycle_returns_the_full_cycle_in_edge_order():
    assert find_cycle({"a": set(), "b": {"a"}}) is None
    # a -> b -> c -> a  (b runs after a, c after b, a after c)
    cycle = find_cycle({"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": {"a"}})
    assert cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == {"a", "b", "c"}
    for x, y in zip(cycle, cycle[1:]):  # each consecutive pair is a real edge x -> y
        assert x in {"a": {"c"}, "b": {"a"}, "c": {"b"}}[y]


def test_calling_tasks_makes_edges_and_refs():
    with Pipeline("p1") as p:
        x = one()
        y = add(x, b=x)
        z = add(y["key"])
    assert y.upstream_ids == {"one"} and z.upstream_ids == {"add"}
    assert y.args == (OutputRef("one"),) and y.kwargs == {"b": OutputRef("one")}
    assert z.task_id == "add__1"  # a second call of the same function gets a suffix
    assert z.args == (OutputRef("add", "key"),)
    assert p.order() == ["one", "add", "add__1"]


def test_ordering_operators():
    with Pipeline("p2") as p:
        a, b, c, d = (shell("true", name=n) for n in "abcd")
        a >> [b, c]
        [b, c] >> d
    assert b.upstream_ids == {"a"} and c.upstream_ids == {"a"} and d.upstream_ids == {"b", "c"}
    assert p.order()[0] == "a" and p.order()[-1] == "d"


def test_task_called_outside_a_pipeline_runs_the_function():
    assert add(2, b=3) == 5


def test_cycle_is_named_in_order():
    with pytest.raises(DagCycleError) as info:
        with Pipeline("cyclic"):
            a, b, c = (shell("true", name=n) for n in "abc")
            a >> b >> c >> a
    err = info.value
    assert err.pipeline == "cyclic"
    assert "a -> b -> c -> a" in str(err) or "b -> c -> a -> b" in str(err) or "c -> a -> b -> c" in str(err)
    assert "test_dag.py" in str(err)


def test_duplicate_explicit_task_id_names_both_sites():
    with pytest.raises(DuplicateTaskError) as info:
        with Pipeline("dups"):
            shell("true", name="x")
            shell("false", name="x")
    msg = str(info.value)
    assert "'x'" in msg and "dups" in msg
    assert msg.count("test_dag.py:") >= 2


def test_unknown_upstream_is_reported():
    with Pipeline("unk") as p:
        a = shell("true", name="a")
    a.upstream_ids.add("ghost")
    with pytest.raises(UnknownTaskError, match="ghost"):
        p.validate()


@pytest.mark.parametrize("cron", ["61 * * * *", "every day", "* * *"])
def test_invalid_cron_names_pipeline_and_expression(cron):
    with pytest.raises(ScheduleError) as info:
        Pipeline("cronbad", schedule=cron)
    assert "cronbad" in str(info.value) and cron in str(info.value)


def test_options_are_validated():
    with pytest.raises(DefinitionError, match="trigger_rule"):
        with Pipeline("opts"):
            shell("true", name="a", trigger_rule="sometimes")
    with pytest.raises(DefinitionError, match="retries"):
        with Pipeline("opts2"):
            shell("true", name="a", retries=-1)
    with pytest.raises(DefinitionError, match="unknown default_args"):
        Pipeline("opts3", default_args={"retry": 1})
    with pytest.raises(DefinitionError, match="invalid pipeline name"):
        Pipeline("has space")


def test_default_args_apply_unless_overridden():
    with Pipeline("defaults", default_args={"retries": 2, "queue": "gpu"}):
        a = shell("true", name="a")
        b = shell("true", name="b", retries=0)
    assert (a.retries, a.queue) == (2, "gpu")
    assert (b.retries, b.queue) == (0, "gpu")


def test_params_view_gives_refs_and_rejects_unknown_names():
    with Pipeline("params", params={"alpha": 1.0}) as p:
        t = add(p.params.alpha)
    assert t.args == (ParamRef("alpha"),)
    assert list(p.params) == ["alpha"] and "alpha" in p.params
    with pytest.raises(DefinitionError, match="declared: alpha"):
        p.params["beta"]


def test_task_outside_pipeline_context_is_an_error():
    with pytest.raises(DefinitionError, match="outside a pipeline"):
        shell("true", name="lonely")


def test_fingerprint_changes_with_code_and_upstream():
    def build(cmd):
        with Pipeline("fp") as p:
            a = shell(cmd, name="a")
            b = shell("echo b", name="b")
            a >> b
        return p

    p1, p2, p3 = build("echo 1"), build("echo 1"), build("echo 2")
    assert p1.fingerprint() == p2.fingerprint()
    assert p1.fingerprint() != p3.fingerprint()
    # b's own code did not change, but its upstream did
    assert p1.task_fingerprints()["b"] != p3.task_fingerprints()["b"]


def test_definition_is_plain_data():
    import json

    with Pipeline("defn", params={"n": 1}, schedule="@daily") as p:
        x = one()
        add(x)
    d = p.definition()
    json.dumps(d)
    assert [t["id"] for t in d["tasks"]] == ["one", "add"]
    assert d["tasks"][1]["upstream"] == ["one"] and d["schedule"] == "@daily"


def test_tasks_pickle_without_their_pipeline():
    import cloudpickle

    with Pipeline("pick") as p:
        x = one()
        y = add(x)
    clone = cloudpickle.loads(cloudpickle.dumps(y))
    assert clone.task_id == "add" and clone.args == (OutputRef("one"),)
    assert clone._pipeline is None and len(cloudpickle.dumps(y)) < len(cloudpickle.dumps(p))


def test_ordering_the_task_function_instead_of_its_handle_says_what_to_write():
    """``slow >> ok`` with the @task function raised AttributeError 'TaskFactory' object has no
    attribute 'set_upstream'; now a DefinitionError names the function and the line to write."""
    with Pipeline("order") as p:
        ok = one()
        with pytest.raises(DefinitionError) as before:
            add >> ok
        with pytest.raises(DefinitionError) as after:
            ok >> add
        with pytest.raises(DefinitionError) as listed:
            ok >> [add]
    assert "add is the @task function, not a task" in str(before.value) and "add() >> one" in before.value.hint
    assert "cannot order task 'one' before add" in str(after.value) and "one >> add()" in after.value.hint
    assert "one >> add()" in listed.value.hint
    assert p.tasks["one"].upstream_ids == set()
