"""Notifications (nbflow.notify, built on Apprise), on_retry and pipeline SLAs, against a real
local SMTP server (aiosmtpd) and a real local HTTP server receiving json:// webhooks."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nbflow import api, notifications
from nbflow.loader import load_pipeline
from nbflow.sla import SlaWatch

NOTEBOOKS = Path(__file__).parent / "notebooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    from aiosmtpd.controller import Controller

    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[int, list[tuple[str, dict[str, Any]]]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], got
    server.shutdown()
    server.server_close()


FAILING_NOTEBOOK = """
import nbflow
from nbflow import Pipeline, notebook

MAIL = "mailto://127.0.0.1:{smtp}?mode=insecure&from=nbflow@example.com&to=ops@example.com"
HOOK = "json://127.0.0.1:{hook}/hook"

with Pipeline("ml", on_failure=nbflow.notify(HOOK, attach=False)) as pipeline:
    notebook({nb!r}, name="train", parameters={{"alpha": 3}}, retries=1,
             on_failure=nbflow.notify(MAIL), on_retry=nbflow.notify(HOOK, attach=False))
"""


def test_failed_notebook_task_mails_its_output_notebook_as_html_and_retries_reach_the_webhook(
    nbflow_home, write_pipeline, smtp, webhook, monkeypatch
):
    monkeypatch.setenv("NBFLOW_UI_URL", "http://jupyter.example:8888/")
    api.reset()
    (smtp_port, box), (hook_port, hooks) = smtp, webhook
    path = write_pipeline(FAILING_NOTEBOOK.format(smtp=smtp_port, hook=hook_port, nb=str(NOTEBOOKS / "raises.ipynb")))
    result = api.run_pipeline(load_pipeline(path), executor="inline")
    assert result.state.value == "failed"
    assert notifications.flush(120)
    run = result.run_id

    # the task's on_failure: one mail, after the last try, with the output notebook as HTML
    assert len(box.messages) == 1, [m["Subject"] for m in box.messages]
    mail = box.messages[0]
    assert mail["Subject"] == f"nbflow: train failed in ml run {run} (try 2 of 2)"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    for line in (
        "Pipeline: ml",
        f"Run: {run}",
        "Task: train (notebook)",
        "Try: 2 of 2",
        "Reason: cell_error",
        "Failing cell: 2",
        "bad alpha 3",
        f"http://jupyter.example:8888/nbflow/api/runs/{run}/tasks/train/log.txt",
        f"http://jupyter.example:8888/nbflow/api/runs/{run}/tasks/train/output.html",
        f"http://jupyter.example:8888/nbflow/api/runs/{run}",
    ):
        assert line in text, (line, text)
    pages = [part for part in mail.iter_attachments() if part.get_content_type() == "text/html"]
    assert [p.get_filename() for p in pages] == [f"ml-run{run}-train-try2.html"]
    page = pages[0].get_content()
    page = page.decode() if isinstance(page, bytes) else page
    assert "<html" in page and "before the error" in page and "bad alpha 3" in page

    # the webhook: on_retry after try 1, then the pipeline's on_failure naming the failed task
    titles = [body["title"] for _, body in hooks]
    assert titles == [
        f"nbflow: train failed in ml run {run}, will retry (try 1 of 2)",
        f"nbflow: run {run} of ml failed (train)",
    ], titles
    assert all(p == "/hook" for p, _ in hooks)
    retry = hooks[0][1]["message"]
    assert "Try: 1 of 2" in retry and "Reason: cell_error" in retry and "Next try at:" in retry
    assert "Failing cell: 2" in hooks[1][1]["message"]
    assert not hooks[0][1].get("attachments")  # attach=False


RETRYING = """
import json, nbflow
from nbflow import Pipeline, task

def record(ctx):
    with open({log!r}, "a") as fh:
        fh.write(json.dumps(ctx) + "\\n")

with Pipeline("flaky", default_args={{"on_retry": record, "on_success": record}}) as pipeline:
    @task(retries=2, retry_delay=0)
    def wobble():
        import os
        marker = {marker!r}
        tries = int(open(marker).read()) if os.path.exists(marker) else 0
        open(marker, "w").write(str(tries + 1))
        if tries < 2:
            raise RuntimeError(f"wobble {{tries + 1}}")
        return "steady"

    wobble()
"""


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_on_retry_is_called_with_each_failed_try_and_its_reason(nbflow_home, write_pipeline, tmp_path, executor):
    log, marker = tmp_path / "callbacks.jsonl", tmp_path / "tries"
    path = write_pipeline(RETRYING.format(log=str(log), marker=str(marker)))
    result = api.run_pipeline(load_pipeline(path), executor=executor)
    assert result.state.value == "success"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["event"], c["try_number"], c["max_tries"]) for c in calls] == [
        ("retry", 1, 3),
        ("retry", 2, 3),
        ("success", 3, 3),
    ]
    for n, call in enumerate(calls[:2], start=1):
        assert call["task_id"] == "wobble" and call["state"] == "up_for_retry"
        assert call["reason"] == "exception" and f"wobble {n}" in call["error"]
        assert call["ename"] == "RuntimeError" and "Traceback" in call["traceback"]


SLOW = """
import json, nbflow
from datetime import timedelta
from nbflow import Pipeline, task

alert = nbflow.notify("json://127.0.0.1:{hook}/sla", timeout=5)

def missed(ctx):
    with open({log!r}, "a") as fh:
        fh.write(json.dumps(ctx) + "\\n")
    alert(ctx)

with Pipeline("slow", sla=timedelta(seconds={sla}), on_sla_miss=missed) as pipeline:
    @task
    def nap():
        import time
        time.sleep({nap})
        return "rested"

    nap()
"""


def test_sla_miss_is_reported_once_while_the_run_goes_on(nbflow_home, write_pipeline, tmp_path, monkeypatch, webhook):
    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.2")  # the driver's loop turns (and SLA checks) at least this often
    api.reset()
    log, (hook_port, hooks) = tmp_path / "sla.jsonl", webhook
    pipeline = load_pipeline(write_pipeline(SLOW.format(log=str(log), sla=1, nap=4, hook=hook_port)))
    result = api.run_pipeline(pipeline, executor="local")
    assert result.state.value == "success"  # a miss does not change the run
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1, calls
    ctx = calls[0]
    assert ctx["event"] == "sla_miss" and ctx["run_id"] == result.run_id and ctx["pipeline"] == "slow"
    assert ctx["sla"] == 1.0 and ctx["state"] == "running"  # found while the task still ran
    store = api.open_store()
    row = store.get_run(result.run_id)
    assert row["sla_missed_at"] is not None and row["started_at"] is not None
    assert 1.0 <= (row["sla_missed_at"] - row["started_at"]).total_seconds() < 4.0
    # another driver (a replica, or one that took the run over) does not report it again
    assert SlaWatch(store).check(result.run_id, pipeline, ended=True) is False
    assert len(log.read_text().splitlines()) == 1
    import io

    from nbflow.cli import main

    out = io.StringIO()
    assert main(["runs"], out=out) == 0 and "success, SLA missed" in out.getvalue(), out.getvalue()
    out = io.StringIO()
    assert main(["tasks", str(result.run_id)], out=out) == 0 and "missed its SLA at" in out.getvalue()
    assert notifications.flush(60)
    assert [(path, body["title"]) for path, body in hooks] == [
        ("/sla", f"nbflow: run {result.run_id} of slow missed its SLA (1s)")
    ]
    assert "SLA: 1s from the run's start" in hooks[0][1]["message"]


def test_a_run_within_its_sla_reports_nothing(nbflow_home, write_pipeline, tmp_path):
    log = tmp_path / "sla.jsonl"
    result = api.run_pipeline(
        load_pipeline(write_pipeline(SLOW.format(log=str(log), sla=120, nap=0, hook=free_port()))), executor="inline"
    )
    assert result.state.value == "success"
    assert not log.exists()
    assert api.open_store().get_run(result.run_id)["sla_missed_at"] is None


UNREACHABLE = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("quiet") as pipeline:
    @task(on_success=nbflow.notify("json://127.0.0.1:{port}/down", "bogus://s3cr3t-token@nowhere",
                                   "slack://s3cr3tslacktoken", timeout=2))
    def fine():
        return 1

    fine()
"""


def test_an_unreachable_target_does_not_fail_the_run_and_is_logged_masked(nbflow_home, write_pipeline, caplog):
    port = free_port()  # nothing listens there
    caplog.set_level(logging.INFO, logger="nbflow.notify")
    caplog.set_level(logging.DEBUG, logger="apprise")  # Apprise logs a URL it cannot load as given: masked too
    result = api.run_pipeline(load_pipeline(write_pipeline(UNREACHABLE.format(port=port))), executor="inline")
    assert result.state.value == "success"
    assert result.task("fine")["state"] == "success"
    assert notifications.flush(60)
    messages = [r.getMessage() for r in caplog.records if r.name == "nbflow.notify"]
    assert any(f"notification to json://127.0.0.1:{port}/down" in m and "failed" in m for m in messages), messages
    assert any("bogus://***" in m and "not a URL Apprise knows" in m for m in messages), messages
    assert any("slack://***" in m and "not a URL Apprise knows" in m for m in messages), messages
    apprise_says = [r.getMessage() for r in caplog.records if r.name == "apprise"]
    assert any("slack://" in m for m in apprise_says), apprise_says  # it names the URL: masked
    assert "s3cr3t" not in caplog.text


SILENT = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("quiet") as pipeline:
    @task(on_success=nbflow.notify("json://127.0.0.1:{port}/down", timeout=6))
    def fine():
        return 1

    fine()
"""


def test_a_server_that_never_answers_does_not_hold_up_the_run(nbflow_home, write_pipeline, caplog):
    """A webhook that accepts the connection and never answers: the run ends at once, the
    message is given up after its timeout on the background thread, and that is logged."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever reads or answers
    port = silent.getsockname()[1]
    caplog.set_level(logging.INFO, logger="nbflow.notify")
    try:
        result = api.run_pipeline(load_pipeline(write_pipeline(SILENT.format(port=port))), executor="inline")
        assert result.state.value == "success"
        assert not notifications.flush(0.5)  # still waiting for the silent server, the run over already
        assert notifications.flush(60)
    finally:
        silent.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "nbflow.notify"]
    assert any(f"notification to json://127.0.0.1:{port}/down failed" in m for m in messages), messages


def test_messages_and_masking():
    ctx = {
        "event": "failure",
        "pipeline": "ml",
        "run_id": 12,
        "task_id": "train",
        "kind": "notebook",
        "try_number": 2,
        "max_tries": 3,
        "reason": "task_timeout",
        "error": "task timed out after 60s",
    }
    title, body = notifications.message(ctx)
    assert title == "nbflow: train failed in ml run 12 (try 2 of 3)"
    assert "Reason: task_timeout" in body and "task timed out after 60s" in body
    assert "nbflow tasks 12" in body and "NBFLOW_UI_URL" in body  # no UI URL set: how to get one
    assert "hunter2" not in notifications.mask_url("mailto://me:hunter2@example.com")
    assert "xoxb" not in notifications.mask_url("slack://xoxb-1234-5678-abcdef/#general")
    assert notifications.mask_url("nosuch://tok3n@host") == "nosuch://***"
    notifier = notifications.notify("mailto://me:hunter2@example.com", timeout=3)
    assert "hunter2" not in repr(notifier)
    import pickle  # a task's callbacks travel with it to workers

    copy = pickle.loads(pickle.dumps(notifier))
    assert copy.urls == notifier.urls and copy.timeout == 3.0


def test_definition_checks():
    from datetime import timedelta

    from nbflow import Pipeline, notify, task
    from nbflow.exceptions import DefinitionError

    with pytest.raises(DefinitionError, match="on_sla_miss of pipeline 'p' must be callable"):
        Pipeline("p", sla=timedelta(minutes=5), on_sla_miss="mailto://x")
    with pytest.raises(DefinitionError, match="sla must be a number of seconds"):
        Pipeline("p", sla="soon")
    with pytest.raises(DefinitionError, match="needs at least one Apprise URL"):
        notify()
    hook = notify("json://127.0.0.1:9/hook")
    with Pipeline("p", sla=timedelta(minutes=5), on_sla_miss=hook, default_args={"on_retry": hook}) as p:

        @task(retries=1)
        def t():
            return 1

        t()
    assert p.sla == 300.0 and p.tasks["t"].on_retry is hook
    with pytest.raises(DefinitionError, match="on_retry of task 'u' must be callable"):
        with Pipeline("q"):
            task(name="u", on_retry="nope")(lambda: 1)()


def test_sla_miss_is_recorded_once_on_postgres(pg_url, write_pipeline, tmp_path):
    """The compare-and-set on runs.sla_missed_at on PostgreSQL: the driver that ran the run reported
    the miss (sla=0: found at the latest when the run ends), two more drivers' watches do not."""
    log = tmp_path / "sla.jsonl"
    pipeline = load_pipeline(write_pipeline(SLOW.format(log=str(log), sla=0, nap=0, hook=free_port())))
    result = api.run_pipeline(pipeline, executor="inline")
    assert result.state.value == "success"
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == ["sla_miss"]
    store = api.open_store()
    first = store.get_run(result.run_id)["sla_missed_at"]
    assert first is not None
    assert [SlaWatch(store).check(result.run_id, pipeline, ended=True) for _ in range(2)] == [False, False]
    assert store.get_run(result.run_id)["sla_missed_at"] == first
    assert len(log.read_text().splitlines()) == 1


def test_report_mode_notebooks_are_attached_without_their_code(smtp, tmp_path):
    """A notebook task with report_mode=True hides its code: so does the page a notification attaches."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("hidden_code_line = 42\nprint('shown output')")
    cell.outputs = [new_output("stream", name="stdout", text="shown output\n")]
    path = tmp_path / "output.ipynb"
    nbformat.write(new_notebook(cells=[cell]), str(path))
    port, box = smtp
    notifier = notifications.notify(
        f"mailto://127.0.0.1:{port}?mode=insecure&from=nbflow@example.com&to=ops@example.com"
    )
    ctx = {"event": "failure", "pipeline": "rep", "run_id": 3, "task_id": "report", "kind": "notebook"}
    ctx.update(try_number=1, max_tries=1, reason="cell_error", output_uri=str(path))
    for report_mode in (True, False):
        sent = notifier.send({**ctx, "report_mode": report_mode})
        assert list(sent.values()) == [True], sent
    pages = []
    for mail in box.messages:
        (part,) = [p for p in mail.iter_attachments() if p.get_content_type() == "text/html"]
        page = part.get_content()
        pages.append(page.decode() if isinstance(page, bytes) else page)
    assert len(pages) == 2 and all("shown output" in p for p in pages)
    assert "hidden_code_line" not in pages[0] and "hidden_code_line" in pages[1]


QUICK_FAIL = """
import nbflow
from nbflow import Pipeline, task

with Pipeline("quick_fail", on_failure=nbflow.notify("json://127.0.0.1:{port}/cli")) as pipeline:
    @task
    def boom():
        raise ValueError("no input")

    boom()
"""


def test_a_short_cli_run_still_sends_its_notification_before_the_process_exits(webhook, write_pipeline, nbflow_home):
    """`nbflow run` of a run that fails at once: the message is sent while the process exits
    (Apprise's own thread pool refused work during interpreter shutdown; it was lost)."""
    import os
    import subprocess
    import sys

    port, got = webhook
    path = write_pipeline(QUICK_FAIL.format(port=port))
    env = {**os.environ, "NBFLOW_HOME": str(nbflow_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "-e", "inline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed (see apprise's log)" not in proc.stderr, proc.stderr
    assert [(p, body["title"]) for p, body in got] == [("/cli", "nbflow: run 1 of quick_fail failed (boom)")]
