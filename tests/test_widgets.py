"""The live run view: real comm messages from a real kernel while `%nbflow run` runs; HTML views."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from nbflow import api
from nbflow.jupyter.runs import Run
from nbflow.jupyter.widgets import RunView, failure_html, run_html
from nbflow.loader import load_pipeline
from nbflow.render import STATE_COLORS

LIVE = """
import time
from nbflow import Pipeline, task

with Pipeline("live") as pipeline:
    @task
    def slow():
        time.sleep(1.5)
        return 41

    @task
    def after(x):
        return x + 1

    after(slow())
"""
BADGE = re.compile(r'data-task="([^"]+)" data-state="([^"]+)"')


def _execute(kc, code: str, timeout: float = 90) -> tuple[list[dict], dict]:
    """Run ``code``; every iopub message of that execution, and its execute_reply."""
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:  # skip a late reply to an earlier request
        reply = kc.get_shell_msg(timeout=timeout)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages, reply


@pytest.mark.slow
def test_run_view_updates_are_sent_while_the_run_goes_on(nbflow_home, write_pipeline, tmp_path):
    from jupyter_client.manager import start_new_kernel

    path = write_pipeline(LIVE)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))  # inherits NBFLOW_HOME
    try:
        _, reply = _execute(kc, "%load_ext nbflow")
        assert reply["content"]["status"] == "ok"
        messages, reply = _execute(kc, f"%nbflow run {path} --executor local")
        # an inline run (tasks in the kernel's own process) leaves the kernel's output working
        assert _execute(kc, f"%nbflow run {path} --executor inline")[1]["content"]["status"] == "ok"
        after, _ = _execute(kc, "print('still shown')")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    opened = [m for m in messages if m["msg_type"] == "comm_open"]
    assert opened, "the run view opened no widget comms"
    updates = []  # (date, task, state) of every state badge sent
    for m in messages:
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update":
            value = m["content"]["data"]["state"].get("value", "")
            for task, state in BADGE.findall(value):
                updates.append((m["header"]["date"], task, state))
    done = reply["header"]["date"]
    for task in ("slow", "after"):
        states = [s for _, t, s in updates if t == task]
        assert "running" in states and "success" in states, (task, states)
        assert states.index("running") < states.index("success"), (task, states)
    # every update left the kernel before the cell finished: the view is live, not a final printout
    assert all(date < done for date, _, _ in updates)
    running = min(d for d, t, s in updates if (t, s) == ("slow", "running"))
    success = min(d for d, t, s in updates if (t, s) == ("slow", "success"))
    assert (success - running).total_seconds() >= 1.0  # 'running' was shown while slow() slept
    assert any(m["msg_type"] == "stream" and "still shown" in m["content"]["text"] for m in after)
    # the final state of the whole run went out too
    assert any(t == "_run" and s == "success" for _, t, s in updates)


def _event(task_id: str, state: str, **kw):
    return SimpleNamespace(
        task_id=task_id,
        state=state,
        try_number=kw.get("try_number", 1),
        at=kw.get("at", 0.0),
        duration=kw.get("duration"),
        message=kw.get("message", ""),
    )


def test_run_view_rows_follow_events_and_finish():
    details = {
        "run": {"id": 7, "pipeline": "p", "state": "queued"},
        "tasks": [
            {"task_id": "a", "state": "pending", "max_tries": 2},
            {"task_id": "b", "state": "pending", "max_tries": 1},
        ],
    }
    view = RunView(details, tick=0)
    view(_event("a", "running"))
    assert 'data-state="running"' in view.rows["a"].badge.value and view.rows["a"].tries.value == "1/2"
    view(_event("a", "up_for_retry", message="cell 3 raised ValueError: bad\nmore"))
    assert "cell 3 raised ValueError: bad" in view.rows["a"].extra.value and "more" not in view.rows["a"].extra.value
    view(_event("a", "success", try_number=2, duration=2.5))
    assert view.rows["a"].duration.value == "2.5s" and view.rows["a"].tries.value == "2/2"
    view(_event("unknown", "running"))  # a task outside the view is ignored
    final = {
        "run": {"id": 7, "pipeline": "p", "state": "failed", "started_at": None, "ended_at": None},
        "tasks": [
            {
                "task_id": "a",
                "state": "success",
                "try_number": 2,
                "max_tries": 2,
                "duration": 2.5,
                "log_uri": "/x/a/log.txt",
                "output_uri": None,
                "error": None,
            },
            {
                "task_id": "b",
                "state": "failed",
                "try_number": 1,
                "max_tries": 1,
                "duration": 1.0,
                "log_uri": None,
                "output_uri": "/x/b/output.ipynb",
                "error": "cell 2 raised KeyError: 'k'",
            },
        ],
        "attempts": [
            {
                "task_id": "b",
                "try_number": 1,
                "state": "failed",
                "message": "cell 2 raised KeyError: 'k'",
                "ename": "KeyError",
                "traceback": "KeyError <b>'k'</b>",
                "output_uri": "/x/b/output.ipynb",
            }
        ],
    }
    view.finish(final)
    assert 'data-state="failed"' in view.header.value
    assert ">log</a>" in view.rows["a"].extra.value and ">notebook</a>" in view.rows["b"].extra.value
    assert "cell 2 raised KeyError" in view.problems.value
    assert "&lt;b&gt;" in view.problems.value  # tracebacks are escaped, not rendered


def test_failure_html_without_traceback():
    text = failure_html("t", {"try_number": 1, "reason": "task_timeout", "message": None})
    assert "task_timeout" in text and "<details>" not in text


def test_run_object_and_pipeline_display(nbflow_home, write_pipeline):
    pipeline = load_pipeline(write_pipeline(LIVE.replace("time.sleep(1.5)", "pass")))
    bundle = pipeline._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith(("<?xml", "<svg")) and "slow" in bundle["image/svg+xml"]
    run = pipeline.run(executor="inline", live=False)
    assert isinstance(run, Run) and run.ok and run["after"] == 42 and run.get("slow") == 41
    html = run._repr_html_()
    assert f"run {run.run_id}</b>" in html and 'data-task="after" data-state="success"' in html
    assert run_html(api.run_details(run.run_id)) == html
    assert "live" in repr(run) and run.raise_for_state() is run
    assert 'fill="#8fdb8f"' in run.show().data  # coloured by the run's states


def test_the_live_view_and_the_table_say_why_a_task_ran_or_was_reused():
    details = {
        "run": {"id": 5, "pipeline": "p", "state": "queued"},
        "tasks": [
            {"task_id": "a", "state": "pending", "max_tries": 1},
            {"task_id": "b", "state": "pending", "max_tries": 1},
        ],
    }
    view = RunView(details, tick=0)
    view(SimpleNamespace(**{**vars(_event("a", "cached", try_number=0)), "why": "reused from run 4, try 1"}))
    view(SimpleNamespace(**{**vars(_event("b", "running")), "why": "parameter C: 1.0 -> 0.5"}))
    assert 'data-state="cached"' in view.rows["a"].badge.value and STATE_COLORS["cached"] in view.rows["a"].badge.value
    assert STATE_COLORS["cached"] != STATE_COLORS["success"]
    assert "reused from run 4, try 1" in view.rows["a"].extra.value
    assert "parameter C: 1.0 -&gt; 0.5" in view.rows["b"].extra.value
    final = {
        "run": {"id": 5, "pipeline": "p", "state": "success", "started_at": None, "ended_at": None},
        "tasks": [
            {
                "task_id": "a",
                "state": "cached",
                "try_number": 0,
                "max_tries": 1,
                "duration": None,
                "log_uri": None,
                "output_uri": None,
                "error": None,
                "why": "reused from run 4, try 1",
            },
            {
                "task_id": "b",
                "state": "success",
                "try_number": 1,
                "max_tries": 1,
                "duration": 1.0,
                "log_uri": "/x/log.txt",
                "output_uri": None,
                "error": None,
                "why": "parameter C: 1.0 -> 0.5",
            },
        ],
        "attempts": [],
    }
    view.finish(final)
    assert "reused from run 4, try 1" in view.rows["a"].extra.value and ">log</a> · " in view.rows["b"].extra.value
    table = run_html(final)
    assert "<th style" in table and ">why</th>" in table and "parameter C: 1.0 -&gt; 0.5" in table
    assert ">why</th>" not in run_html({**final, "tasks": [{**t, "why": None} for t in final["tasks"]]})
