"""Task groups (issue 16, item 2): ``nbflow.group`` as Airflow's TaskGroup and ``@task_group``.

Ids get the group's prefix, ``>>`` wires a group's entry and exit tasks, groups nest, carry
``default_args``, reach the definition and are drawn as graphviz clusters (collapsible). Airflow's
``example_task_group`` and ``example_task_group_decorator`` (tests/airflow_examples/) run through
the real CLI with the task ids and states Airflow documents.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import nbflow
from nbflow import Pipeline, shell, task
from nbflow.exceptions import DefinitionError
from nbflow.groups import TaskGroup
from nbflow.mapspec import split_instance_id
from nbflow.render import render, to_dot
from tests.jupyter_procs import nbflow_env, register_pipelines, start_jupyter, stop_nbflow_processes
from tests.lab_browser import CHROMIUM, lab_page, shot
from tests.test_cli import nbflow as run_cli

EXAMPLES = Path(__file__).parent / "airflow_examples"


@task
def step(x=None):
    return x


def _up(pipeline: Pipeline) -> dict[str, list[str]]:
    return {tid: sorted(t.upstream_ids) for tid, t in pipeline.tasks.items()}


# --- ids, nesting, the definition ----------------------------------------------------------


def test_a_group_prefixes_its_task_ids_nested_groups_prefix_outer_inner_task():
    with Pipeline("ids") as p:
        top = step.options_(name="top")()
        with nbflow.group("outer", tooltip="the outer one") as outer:
            a = step.options_(name="a")(top)
            with nbflow.group("inner") as inner:
                b = step.options_(name="b")(a)
                c = step(b)  # a name from the function; a second call gets __1 inside the group
                d = step(c)
    assert (a.task_id, b.task_id, c.task_id, d.task_id) == (
        "outer.a",
        "outer.inner.b",
        "outer.inner.step",
        "outer.inner.step__1",
    )
    assert (outer.group_id, inner.group_id, inner.parent) == ("outer", "outer.inner", outer)
    assert (top.group_id, a.group_id, b.group_id) == (None, "outer", "outer.inner")
    assert b.upstream_ids == {"outer.a"}  # data edges use the prefixed ids
    definition = p.definition()
    assert definition["groups"] == [
        {"id": "outer", "label": "outer", "parent": None, "tooltip": "the outer one"},
        {"id": "outer.inner", "label": "inner", "parent": "outer", "tooltip": ""},
    ]
    assert {t["id"]: t["group"] for t in definition["tasks"]} == {
        "top": None,
        "outer.a": "outer",
        "outer.inner.b": "outer.inner",
        "outer.inner.step": "outer.inner",
        "outer.inner.step__1": "outer.inner",
    }
    assert Pipeline.__name__ and "groups" in p.definition() and p.definition()["groups"] == definition["groups"]


def test_prefix_group_id_false_keeps_plain_ids_but_the_group_still_wires_and_draws():
    with Pipeline("plain") as p:
        start = step.options_(name="start")()
        with nbflow.group("loose", prefix_group_id=False) as loose:
            x = step.options_(name="x")()
            with nbflow.group("deeper") as deeper:  # its id is not prefixed either (Airflow)
                y = step.options_(name="y")()
        start >> loose
    assert (x.task_id, y.task_id, deeper.group_id) == ("x", "deeper.y", "deeper")
    assert _up(p) == {"start": [], "x": ["start"], "deeper.y": ["start"]}
    assert [t["group"] for t in p.definition()["tasks"] if t["id"] == "x"] == ["loose"]


def test_a_pipeline_without_groups_has_an_empty_groups_list_and_no_group_on_tasks():
    with Pipeline("flat") as p:
        step()
    definition = p.definition()
    assert definition["groups"] == [] and definition["tasks"][0]["group"] is None


# --- wiring: entry tasks (no upstream inside) and exit tasks (no downstream inside) ----------


def _section(name: str) -> tuple[object, list]:
    """A group with a diamond-ish inside: e1, e2 -> m -> x1; e2 -> x2 (entries e1 e2, exits x1 x2)."""
    with nbflow.group(name) as g:
        e1, e2 = step.options_(name="e1")(), step.options_(name="e2")()
        m = step.options_(name="m")()
        [e1, e2] >> m
        x1 = step.options_(name="x1")(m)
        x2 = step.options_(name="x2")(e2)
    return g, [e1, e2, m, x1, x2]


def test_group_before_a_task_wires_every_exit_task_and_a_task_before_a_group_every_entry_task():
    with Pipeline("wire") as p:
        start = step.options_(name="start")()
        g, _ = _section("g")
        end = step.options_(name="end")()
        assert (start >> g) is g and (g >> end) is end  # chains like tasks do
    assert sorted(t.task_id for t in g.entry_tasks()) == ["g.e1", "g.e2"]
    assert sorted(t.task_id for t in g.exit_tasks()) == ["g.x1", "g.x2"]
    assert _up(p) == {
        "start": [],
        "g.e1": ["start"],
        "g.e2": ["start"],
        "g.m": ["g.e1", "g.e2"],
        "g.x1": ["g.m"],
        "g.x2": ["g.e2"],
        "end": ["g.x1", "g.x2"],
    }


def test_the_other_operators_lists_and_group_to_group():
    with Pipeline("ops") as p:
        a, b, c, d = (step.options_(name=n)() for n in "abcd")
        g1, _ = _section("g1")
        g2, _ = _section("g2")
        g3, _ = _section("g3")
        g4, _ = _section("g4")
        [g1, g2] >> g3  # every exit of g1 and g2 before every entry of g3
        g3 << a  # a before g3's entries
        b << g4  # g4's exits before b
        g4 >> [c, g1]  # a list downstream: a task and a group
        [d] >> g2 >> [c]
        g1 << [d]
    up = _up(p)
    assert up["g3.e1"] == up["g3.e2"] == ["a", "g1.x1", "g1.x2", "g2.x1", "g2.x2"]
    assert up["g3.m"] == ["g3.e1", "g3.e2"]  # inside a group only its own edges
    assert up["b"] == ["g4.x1", "g4.x2"]
    assert up["c"] == ["g2.x1", "g2.x2", "g4.x1", "g4.x2"]
    assert up["g1.e1"] == up["g1.e2"] == ["d", "g4.x1", "g4.x2"]
    assert up["g2.e1"] == ["d"]


def test_a_nested_group_wires_as_part_of_its_outer_group_and_on_its_own():
    with Pipeline("nested") as p:
        start, end, mid = (step.options_(name=n)() for n in ("start", "end", "mid"))
        with nbflow.group("outer") as outer:
            first = step.options_(name="first")()
            with nbflow.group("inner") as inner:
                i1 = step.options_(name="i1")()
                i2 = step.options_(name="i2")(i1)
            solo = step.options_(name="solo")()
        first >> inner  # a task inside the outer group before the inner group
        start >> outer >> end
        inner >> mid
    up = _up(p)
    assert sorted(t.task_id for t in outer.entry_tasks()) == ["outer.first", "outer.solo"]
    assert sorted(t.task_id for t in outer.exit_tasks()) == ["outer.inner.i2", "outer.solo"]
    assert (
        up["outer.inner.i1"] == ["outer.first"] and first.upstream_ids == {"start"} and solo.upstream_ids == {"start"}
    )
    assert up["end"] == ["outer.inner.i2", "outer.solo"]
    assert up["mid"] == ["outer.inner.i2"] and i2.upstream_ids == {"outer.inner.i1"}


def test_a_reentered_group_takes_more_tasks():
    with Pipeline("again") as p:
        with nbflow.group("g") as g:
            step.options_(name="a")()
        end = step.options_(name="end")()
        with g:
            step.options_(name="b")()
        g >> end
    assert _up(p)["end"] == ["g.a", "g.b"]


# --- default_args per group -------------------------------------------------------------------


def test_group_default_args_apply_to_its_tasks_unless_they_set_their_own_and_nest():
    with Pipeline("defaults", default_args={"retries": 1, "queue": "q0"}) as p:
        outside = step.options_(name="outside")()
        with nbflow.group("g", default_args={"retries": 2, "timeout": 30}):
            plain = step.options_(name="plain")()
            own = step.options_(name="own", retries=0)()
            sh = shell("echo hi", name="sh")
            with nbflow.group("inner", default_args={"timeout": 5, "queue": "q1"}):
                deep = step.options_(name="deep")()
        after = step.options_(name="after")()
    assert (outside.retries, outside.timeout, outside.queue) == (1, None, "q0")
    assert (plain.retries, plain.timeout, plain.queue) == (2, 30.0, "q0")
    assert (own.retries, own.timeout) == (0, 30.0)  # the task's own option wins
    assert (sh.retries, sh.timeout) == (2, 30.0)  # every task kind
    assert (deep.retries, deep.timeout, deep.queue) == (2, 5.0, "q1")  # the inner group's over the outer's
    assert (after.retries, after.timeout) == (1, None)  # only inside the block
    assert {t["id"]: t["retries"] for t in p.definition()["tasks"]}["g.inner.deep"] == 2


def test_the_decorator_form_makes_a_group_per_call_and_passes_default_args():
    @nbflow.group(default_args={"retries": 3})
    def section(n):
        """A section."""
        return step(step(n))  # returns its last task: its value can flow on (as Airflow's @task_group)

    @nbflow.group
    def silent():
        step.options_(name="only")()

    @nbflow.group("named", tooltip="named one")
    def anything():
        step.options_(name="t")()

    with Pipeline("deco") as p:
        first = section(1)
        second = section(2)
        g = silent()
        h = anything()
        consumer = step.options_(name="consumer")(second)
        g >> h
    assert section.__doc__ == "A section." and section.__name__ == "section"
    assert (first.task_id, second.task_id) == ("section.step__1", "section__1.step__1")
    assert isinstance(g, TaskGroup) and (g.group_id, h.group_id) == ("silent", "named")
    assert consumer.upstream_ids == {"section__1.step__1"}
    assert p.tasks["section.step"].retries == 3 and p.tasks["silent.only"].retries == 0
    assert _up(p)["named.t"] == ["silent.only"]
    assert [grp["tooltip"] for grp in p.definition()["groups"]] == ["", "", "", "named one"]


# --- errors: each names what, where and the fix ----------------------------------------------


def test_a_group_named_like_a_task_is_an_error_whichever_comes_first():
    with pytest.raises(DefinitionError) as first:
        with Pipeline("clash1"):
            step.options_(name="load")()
            with nbflow.group("load"):
                pass
    with pytest.raises(DefinitionError) as later:
        with Pipeline("clash2"):
            with nbflow.group("load"):
                step.options_(name="x")()
            step.options_(name="load")()
    for err in (first.value, later.value):
        text = str(err)
        assert "task group 'load'" in text and "task 'load'" in text and "have the same id" in text
        assert "test_authoring_groups.py:" in text  # both definition sites
        assert "rename one" in text and err.hint


def test_wiring_an_empty_group_is_an_error_naming_both_and_the_fix():
    with pytest.raises(DefinitionError) as downstream:
        with Pipeline("empty1"):
            start = step.options_(name="start")()
            g = nbflow.group("later")
            with g:
                pass
            start >> g
    assert "task group 'later' has no tasks yet, so it cannot be wired after task 'start'" in str(downstream.value)
    assert "make its tasks inside `with nbflow.group('later'):` first" in str(downstream.value)
    with pytest.raises(DefinitionError) as upstream:
        with Pipeline("empty2"):
            with nbflow.group("void") as void:
                pass
            with nbflow.group("full") as full:
                step()
            void >> full
    assert "task group 'void' has no tasks yet, so it cannot be wired before task group 'full'" in str(upstream.value)


def test_other_group_errors():
    with pytest.raises(DefinitionError, match=r"task group 'g' is opened outside a pipeline"):
        with nbflow.group("g"):
            pass
    with pytest.raises(
        DefinitionError, match=r"opens task group 'g' twice \(first at .*test_authoring_groups.py:\d+, again at"
    ):
        with Pipeline("twice"):
            with nbflow.group("g"):
                step()
            with nbflow.group("g"):
                step()
    with pytest.raises(DefinitionError, match=r"invalid task group name 'a.b'") as dotted:
        nbflow.group("a.b")
    assert "no '.'" in str(dotted.value)
    with pytest.raises(DefinitionError, match=r"unknown default_args key\(s\) retry in group 'g'"):
        nbflow.group("g", default_args={"retry": 2})
    with pytest.raises(DefinitionError, match=r"cannot order task group 'g' before 3: not a task or task group"):
        with Pipeline("bad_peer"):
            with nbflow.group("g") as g:
                step()
            g >> 3


# --- ids with dots everywhere: mapped instances, the CLI, the store, artifact folders ----------


def test_mapped_instance_ids_inside_a_group_split_at_the_last_bracket():
    assert split_instance_id("section_1.train[2]") == ("section_1.train", 2)
    assert split_instance_id("a.b.c[10]") == ("a.b.c", 10)
    assert split_instance_id("section_1.train") is None


MAPPED_IN_GROUP = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("grouped_map") as pipeline:
    @task
    def train(C):
        print("training with", C)
        return C * 10

    @task
    def best(scores):
        return max(scores)

    with nbflow.group("section_1"):
        scores = train.expand(C=[1, 2, 3])
    best(scores)
"""


def test_a_mapped_task_in_a_group_runs_with_dotted_instance_ids_through_the_cli(tmp_path, write_pipeline):
    path = write_pipeline(MAPPED_IN_GROUP)
    home = tmp_path / "home"
    res = run_cli("run", str(path), "--executor", "inline", home=home)
    assert res.returncode == 0, res.stdout + res.stderr
    tasks = run_cli("tasks", "1", home=home).stdout
    for instance in ("section_1.train[0]", "section_1.train[1]", "section_1.train[2]"):
        assert re.search(rf"^{re.escape(instance)} \(C=\d\)\s+success", tasks, re.M), tasks
    assert "training with 3" in run_cli("logs", "1", "section_1.train[2]", home=home).stdout
    assert (home / "runs" / "grouped_map" / "run-1" / "section_1.train[2]" / "try-1" / "log.txt").is_file()
    assert re.search(r"^best\s+success", tasks, re.M), tasks
    assert (
        home / "runs" / "grouped_map" / "run-1" / "best" / "try-1" / "artifacts" / "return.json"
    ).read_text() == "30"


# --- Airflow's example DAGs through the real CLI -----------------------------------------------


def _states(home: Path, run_id: int) -> dict[str, str]:
    res = run_cli("tasks", str(run_id), home=home)
    assert res.returncode == 0, res.stderr
    return dict(re.findall(r"^(\S+)\s+(success|failed|upstream_failed|skipped|cancelled)\s", res.stdout, re.M))


def test_airflow_example_task_group_runs_with_airflows_task_ids_and_only_one_task(tmp_path):
    home = tmp_path / "home"
    example = EXAMPLES / "example_task_group.py"
    res = run_cli("run", str(example), "--executor", "inline", home=home)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "run 1 of example_task_group: success" in res.stdout
    assert _states(home, 1) == {
        tid: "success"
        for tid in (
            "start",
            "section_1.task_1",
            "section_1.task_2",
            "section_1.task_3",
            "section_2.task_1",
            "section_2.inner_section_2.task_2",
            "section_2.inner_section_2.task_3",
            "section_2.inner_section_2.task_4",
            "end",
        )
    }
    assert run_cli("logs", "1", "section_2.inner_section_2.task_2", home=home).stdout.splitlines()[-1] == "1"
    # one task of a group by its dotted id
    only = run_cli("run", str(example), "--executor", "inline", "--only", "section_1.task_2", home=home)
    assert only.returncode == 0, only.stdout + only.stderr
    assert _states(home, 2) == {"section_1.task_2": "success"}
    assert (home / "runs" / "example_task_group" / "run-2" / "section_1.task_2" / "try-1" / "log.txt").is_file()
    # `nbflow dag show` lists the edges of Airflow's example, and draws the groups as clusters
    show = run_cli("dag", "show", str(example), home=home)
    assert show.returncode == 0, show.stderr
    after = dict(re.findall(r"^  (\S+)\s+.*?(?:  after (.*))?$", show.stdout, re.M))
    assert after["section_1.task_1"] == "start"
    assert (
        after["section_2.task_1"] == after["section_2.inner_section_2.task_2"] == "section_1.task_2, section_1.task_3"
    )
    assert after["end"] == "section_2.inner_section_2.task_4, section_2.task_1"
    assert re.search(
        r"^  section_2\.inner_section_2\.task_2 .*  in group section_2\.inner_section_2  after ", show.stdout, re.M
    )
    drawn = run_cli("dag", "show", str(example), "-o", str(tmp_path / "dag.dot"), home=home)
    assert drawn.returncode == 0, drawn.stderr
    assert set(_clusters((tmp_path / "dag.dot").read_text())) == {
        "cluster_section_1",
        "cluster_section_2",
        "cluster_section_2.inner_section_2",
    }


def test_airflow_example_task_group_decorator_runs_five_groups_with_flowing_values(tmp_path):
    home = tmp_path / "home"
    res = run_cli("run", str(EXAMPLES / "example_task_group_decorator.py"), "--executor", "inline", home=home)
    assert res.returncode == 0, res.stdout + res.stderr
    groups = ["task_group_function"] + [f"task_group_function__{i}" for i in range(1, 5)]
    expected = {"task_start": "success", "task_end": "success"}
    expected.update({f"{g}.task_{n}": "success" for g in groups for n in (1, 2, 3)})
    assert _states(home, 1) == expected
    log = run_cli("logs", "1", "task_group_function__3.task_3", home=home).stdout
    assert "[ Task3 [ Task2 [ Task1 3 ] ] ]" in log
    assert "[ Task_End  ]" in run_cli("logs", "1", "task_end", home=home).stdout


# --- pictures: clusters in DOT and SVG, collapsed groups ----------------------------------------


def _example_definition() -> dict:
    import runpy

    return runpy.run_path(str(EXAMPLES / "example_task_group.py"))["pipeline"].definition()


def _clusters(dot: str) -> dict[str, tuple[str | None, str, list[str]]]:
    """{cluster name: (enclosing cluster, label, node ids directly inside)} parsed from DOT text."""
    found: dict[str, tuple[str | None, str, list[str]]] = {}
    stack: list[str] = []
    for line in dot.splitlines():
        line = line.strip()
        if m := re.match(r'subgraph "(cluster_[^"]+)" \{$', line):
            found[m[1]] = (stack[-1] if stack else None, "", [])
            stack.append(m[1])
        elif line == "}" and stack:
            stack.pop()
        elif stack and (m := re.match(r'label="([^"]*)"; ', line)):
            parent, _, nodes = found[stack[-1]]
            found[stack[-1]] = (parent, m[1], nodes)
        elif stack and (m := re.match(r'"([^"]+)" \[label=', line)):
            found[stack[-1]][2].append(m[1])
    assert not stack, "unbalanced braces"
    return found


def test_to_dot_draws_each_group_as_a_labelled_cluster_nested_as_the_groups_are():
    dot = to_dot(_example_definition(), {"section_1.task_1": "success"})
    clusters = _clusters(dot)
    assert clusters == {
        "cluster_section_1": (None, "section_1", ["section_1.task_1", "section_1.task_2", "section_1.task_3"]),
        "cluster_section_2": (None, "section_2", ["section_2.task_1"]),
        "cluster_section_2.inner_section_2": (
            "cluster_section_2",
            "inner_section_2",
            [
                "section_2.inner_section_2.task_2",
                "section_2.inner_section_2.task_3",
                "section_2.inner_section_2.task_4",
            ],
        ),
    }
    assert 'tooltip="Tasks for section_1"' in dot and 'id="group-section_1"' in dot
    assert '"start" -> "section_1.task_1";' in dot and '"section_2.task_1" -> "end";' in dot
    # inside its cluster a task is labelled without the group's prefix (as Airflow draws it), in its state colour
    assert '"section_1.task_1" [label="task_1\\npython: empty\\n[success]"' in dot and "#8fdb8f" in dot
    assert '"section_2.inner_section_2.task_4" [label="task_4\\n' in dot and '"start" [label="start\\n' in dot


def test_to_dot_draws_a_collapsed_group_as_one_node_with_its_states_and_reroutes_edges():
    states = {"section_1.task_1": "success", "section_1.task_2": "success", "section_1.task_3": "failed"}
    dot = to_dot(_example_definition(), states, collapsed=["section_1", "section_2.inner_section_2"])
    clusters = _clusters(dot)
    assert set(clusters) == {"cluster_section_2"}  # the collapsed ones are nodes now
    assert clusters["cluster_section_2"][2] == ["section_2.task_1", "group:section_2.inner_section_2"]
    node = re.search(r'"group:section_1" \[label="([^"]*)".*fillcolor="([^"]*)".*class="([^"]*)"', dot)
    assert node is not None
    assert node[1] == "section_1 ▸ (3 tasks)\\n2 success · 1 failed" and node[2] == "#ff8a80"  # failed wins
    assert node[3] == "nbflow-group-collapsed nbflow-failed"
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)";$', dot, re.M)
    assert ("start", "group:section_1") in edges and ("group:section_1", "section_2.task_1") in edges
    assert ("group:section_1", "group:section_2.inner_section_2") in edges  # two edges in, drawn once
    assert len(edges) == len(set(edges)) and not [e for e in edges if "section_1.task" in e[0] + e[1]]
    # collapsing the outer group folds the inner one with it
    outer = to_dot(_example_definition(), {}, collapsed=["section_2", "section_2.inner_section_2"])
    assert '"group:section_2" [label="section_2 ▸ (4 tasks)\\nnot run"' in outer
    assert "inner_section_2" not in outer.replace("section_2.inner_section_2", "")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (apt-get install graphviz)")
def test_the_svg_has_a_cluster_element_per_group_and_a_node_per_collapsed_group():
    ns = {"svg": "http://www.w3.org/2000/svg"}
    svg = ET.fromstring(render(to_dot(_example_definition(), {})))
    groups = {
        g.get("id"): g.get("class") for g in svg.iterfind(".//svg:g", ns) if (g.get("id") or "").startswith("group-")
    }
    assert groups == {
        "group-section_1": "cluster nbflow-group",
        "group-section_2": "cluster nbflow-group",
        "group-section_2.inner_section_2": "cluster nbflow-group",
    }
    titles = [t.text for t in svg.iterfind(".//svg:g[@class='cluster nbflow-group']/svg:title", ns)]
    assert sorted(titles) == ["cluster_section_1", "cluster_section_2", "cluster_section_2.inner_section_2"]
    labels = {"".join(t.itertext()) for t in svg.iterfind(".//svg:g[@class='cluster nbflow-group']//svg:text", ns)}
    assert labels == {"section_1", "section_2", "inner_section_2"}
    folded = ET.fromstring(render(to_dot(_example_definition(), {}, collapsed=["section_1"])))
    ids = {g.get("id"): g.get("class") for g in folded.iterfind(".//svg:g", ns)}
    assert ids["group-section_1"] == "node nbflow-group-collapsed nbflow-none"
    assert "task-section_1.task_1" not in ids and "task-section_2.task_1" in ids


# --- JupyterLab: the DAG view draws the groups; a click on a group's label folds it, and back ----


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
def test_the_lab_dag_view_collapses_a_group_on_a_click_on_its_label_and_expands_it_on_a_click(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed (pip install -e '.[dev]')")
    root = tmp_path / "lab"
    (root / "pipelines").mkdir(parents=True)
    shutil.copy(EXAMPLES / "example_task_group.py", root / "pipelines")
    env = nbflow_env(root, executor="inline")
    ran = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", "pipelines/example_task_group.py", "--executor", "inline"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    register_pipelines(root, env)
    lab = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    try:
        # REST: dotted task ids in paths; the groups in the definition; a collapsed group in the SVG
        status, log = lab.request("GET", "runs/1/tasks/section_1.task_2/log")
        assert status == 200 and log["text"].splitlines()[-1] == "1"
        status, graph = lab.request("GET", "pipelines/example_task_group/graph")
        assert status == 200 and [g["id"] for g in graph["definition"]["groups"]] == [
            "section_1",
            "section_2",
            "section_2.inner_section_2",
        ]
        status, svg = lab.request("GET", "pipelines/example_task_group/graph.svg?collapsed=section_1")
        svg = svg.replace("&#45;", "-")  # graphviz writes '-' in attributes as a character reference
        assert status == 200 and 'id="group-section_1" class="node nbflow-group-collapsed nbflow-success"' in svg

        with lab_page(lab.url, lab.token) as pg:
            pg.evaluate("() => window.jupyterapp.commands.execute('nbflow:open-dag', {name: 'example_task_group'})")
            view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
            cluster = view.locator('g.cluster[id="group-section_1"]')
            cluster.wait_for(timeout=60_000)
            assert view.locator("g.cluster.nbflow-group").count() == 3
            assert view.locator('g.node[id="task-section_1.task_1"]').count() == 1
            assert (
                view.locator('g.cluster[id="group-section_2.inner_section_2"] text').text_content() == "inner_section_2"
            )
            shot(pg, "lab-groups-1-expanded")

            cluster.locator("text").click()  # the group's label
            folded = view.locator('g.nbflow-group-collapsed[id="group-section_1"]')
            folded.wait_for(timeout=30_000)
            assert "section_1 ▸ (3 tasks)" in folded.text_content() and "3 success" in folded.text_content()
            assert view.locator('g.node[id="task-section_1.task_1"]').count() == 0
            assert view.locator("g.cluster.nbflow-group").count() == 2  # section_2 and its inner group stay
            shot(pg, "lab-groups-2-collapsed")

            folded.click()  # a second click expands it again
            cluster.wait_for(timeout=30_000)
            assert view.locator('g.node[id="task-section_1.task_1"]').count() == 1
            assert view.locator("g.nbflow-group-collapsed").count() == 0
            view.locator('g.node[id="task-section_1.task_2"]').click()  # a task of a group opens its pane
            pg.wait_for_function(
                "(t) => document.querySelector('.nbflow-task-pane h3')?.innerText === t",
                arg="section_1.task_2",
                timeout=30_000,
            )
            shot(pg, "lab-groups-3-expanded-again")
    finally:
        lab.stop()
        stop_nbflow_processes(root)


def test_the_groups_are_part_of_the_pipeline_version():
    """A stored version keeps its definition, so what the picture shows of the groups (ids,
    nesting, labels, tooltips) makes a new version when it changes; a pipeline without groups
    keeps its fingerprint."""

    def make(tooltip: str | None) -> Pipeline:
        with Pipeline("versioned") as p:
            if tooltip is None:
                step.options_(name="x")()
            else:
                with nbflow.group("g", prefix_group_id=False, tooltip=tooltip):
                    step.options_(name="x")()
        return p

    plain, first, same, other = make(None), make("one"), make("one"), make("two")
    assert plain.task_fingerprints() == first.task_fingerprints()  # the same tasks (no prefix)
    assert plain.fingerprint() != first.fingerprint() == same.fingerprint() != other.fingerprint()
