"""``nbflow.notify(url, ...)``: a callback that sends a readable message through Apprise.

``nbflow.notify("mailto://...", "slack://...", "json://host/hook")`` returns a callable for
``on_failure=``, ``on_success=``, ``on_retry=`` (tasks, pipelines, ``default_args``) and
``on_sla_miss=`` (pipelines). Each URL is an `Apprise <https://github.com/caronc/apprise>`_
URL (mail, Slack, Teams, Discord, ntfy, webhooks and 100+ other services); nbflow writes no
client of its own. The message is built from the callback's context (:mod:`nbflow.callbacks`):
a title such as ``nbflow: train failed in ml run 12 (try 2 of 3)`` and a body with the
pipeline, run, task, try, reason, the failing cell, the error and links to the UI when the
``ui_url`` setting (``NBFLOW_UI_URL``) names the Jupyter server. A failed notebook task's
output notebook goes along as an HTML page (nbconvert, :func:`nbflow.tasks.nbexport.notebook_html`)
to the services that take attachments (mail does).

Sending happens on one background thread, so a slow or dead server never holds up the run;
each URL gets ``timeout`` seconds per connection. A notification that fails (server down,
refused, a URL Apprise does not know) is logged, with the URL's secrets masked, and nothing
else happens. At exit the process waits up to :data:`EXIT_WAIT` seconds for what is still
queued; :func:`flush` waits for it explicitly.

The module is not called ``notify``: ``nbflow.notify`` is the function, and a submodule of
that name would replace it on the package once imported.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Notifier", "notify", "flush", "message", "mask_url", "EXIT_WAIT"]

log = logging.getLogger("nbflow.notify")
EXIT_WAIT = 15.0  # seconds a process waits at exit for notifications still queued
MAX_ERROR = 3000  # characters of an error or traceback in a message
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _bare_mask(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return f"{scheme}://***" if scheme and scheme.isalnum() else "***"


class _Scrub(logging.Filter):
    """Masks the URLs of notifications in Apprise's own log records (it prints a URL it cannot
    load as given, secrets included): each URL, its part before ``?`` and its password."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}

    def add(self, url: str) -> str:
        """Register ``url`` (first as ``scheme://***``: masking it may log it); its masked form."""
        from urllib.parse import urlsplit

        bare = _bare_mask(url)
        self.secrets.update({url: bare, url.split("?", 1)[0]: bare})
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password and len(password) > 2:
            self.secrets[password] = "***"
        shown = mask_url(url)
        self.secrets.update({url: shown, url.split("?", 1)[0]: shown})
        return shown

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        scrubbed = text
        for raw in sorted(self.secrets, key=len, reverse=True):
            if raw in scrubbed:
                scrubbed = scrubbed.replace(raw, self.secrets[raw])
        if scrubbed != text:
            record.msg, record.args = scrubbed, None
        return True


_scrub = _Scrub()
logging.getLogger("apprise").addFilter(_scrub)


def mask_url(url: str) -> str:
    """``url`` with its secrets hidden: Apprise's privacy form when it knows the URL, else
    only the scheme (``slack://***``): tokens may be anywhere in a URL Apprise cannot parse."""
    try:
        import apprise

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin:
            return str(plugin.url(privacy=True)).split("?", 1)[0]  # the query: Apprise's options, defaults included
    except Exception:  # noqa: BLE001 - masking must not fail
        pass
    return _bare_mask(url)


# --- the message ---------------------------------------------------------------------------


def _what(ctx: dict[str, Any]) -> str:
    event, task = ctx.get("event"), ctx.get("task_id")
    run = f"{ctx.get('pipeline')} run {ctx.get('run_id')}"
    tries = f"try {ctx.get('try_number')} of {ctx.get('max_tries')}"
    if event == "sla_miss":
        return f"run {ctx.get('run_id')} of {ctx.get('pipeline')} missed its SLA ({_span(ctx.get('sla'))})"
    if task is None:
        failed = [t["task_id"] for t in ctx.get("failed_tasks") or ()]
        return f"run {ctx.get('run_id')} of {ctx.get('pipeline')} {_verb(event)}" + (
            f" ({', '.join(failed)})" if failed else ""
        )
    if event == "retry":
        return f"{task} failed in {run}, will retry ({tries})"
    return f"{task} {_verb(event)} in {run}" + (f" ({tries})" if event == "failure" else "")


def _verb(event: Any) -> str:
    return {"success": "succeeded", "failure": "failed"}.get(str(event), str(event))


def _span(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return str(seconds)
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _clip(text: str) -> str:
    text = _ANSI.sub("", text).strip()
    return text if len(text) <= MAX_ERROR else "...\n" + text[-MAX_ERROR:]


def _task_lines(ctx: dict[str, Any], ui: str) -> list[str]:
    lines = [f"Task: {ctx['task_id']}" + (f" ({ctx['kind']})" if ctx.get("kind") else "")]
    if ctx.get("try_number") is not None:
        lines.append(f"Try: {ctx['try_number']} of {ctx.get('max_tries')}")
    if ctx.get("reason"):
        lines.append(f"Reason: {ctx['reason']}")
    if ctx.get("cell_index") is not None:
        lines.append(f"Failing cell: {ctx['cell_index']} (index in the notebook, from 0)")
    if ctx.get("next_retry_at"):
        lines.append(f"Next try at: {ctx['next_retry_at']}")
    error = ctx.get("error") or (f"{ctx.get('ename')}: {ctx.get('evalue')}" if ctx.get("ename") else "")
    if error:
        lines.append(f"Error: {_clip(str(error))}")
    if ctx.get("traceback"):
        lines += ["", "Traceback:", _clip(str(ctx["traceback"]))]
    run, task = ctx.get("run_id"), ctx["task_id"]
    if ui:
        lines += [
            f"Log: {ui}nbflow/api/runs/{run}/tasks/{task}/log.txt",
            *(
                [f"Output notebook: {ui}nbflow/api/runs/{run}/tasks/{task}/output.html"]
                if ctx.get("output_uri")
                else []
            ),
        ]
    else:
        lines += [f"Log file: {ctx['log_uri']}"] if ctx.get("log_uri") else []
        lines += [f"Output notebook: {ctx['output_uri']}"] if ctx.get("output_uri") else []
    return lines


def message(ctx: dict[str, Any], ui_url: str = "") -> tuple[str, str]:
    """(title, body) of the notification for a callback context (see :mod:`nbflow.callbacks`)."""
    ui = ui_url.rstrip("/") + "/" if ui_url else ""
    title = f"nbflow: {_what(ctx)}"
    lines = [f"Pipeline: {ctx.get('pipeline')}", f"Run: {ctx.get('run_id')}"]
    if ctx.get("logical_date"):
        lines.append(f"Logical date: {ctx['logical_date']}")
    if ctx.get("event") == "sla_miss":
        lines += [
            f"SLA: {_span(ctx.get('sla'))} from the run's start ({ctx.get('started_at')})",
            f"Not finished at: {ctx.get('missed_at')} (state {ctx.get('state')})",
        ]
    elif ctx.get("task_id") is None:
        lines.append(f"State: {ctx.get('state')}")
    if ctx.get("task_id") is not None:
        lines += _task_lines(ctx, ui)
    for failed in ctx.get("failed_tasks") or ():
        lines += ["", *_task_lines({**ctx, **failed, "event": "failure"}, ui)]
    if ui:
        lines += ["", f"Run details: {ui}nbflow/api/runs/{ctx.get('run_id')}", f"JupyterLab (nbflow panel): {ui}lab"]
    else:
        lines += ["", f"Details: nbflow tasks {ctx.get('run_id')} (set NBFLOW_UI_URL for links to the UI)"]
    return title, "\n".join(lines)


# --- the notebook as HTML ----------------------------------------------------------------------


def _notebooks(ctx: dict[str, Any]) -> list[tuple[str, str, int | None, bool]]:
    """(task id, output notebook URI, try, report mode) of the notebook tasks a context reports."""
    items = [ctx] if ctx.get("task_id") is not None else list(ctx.get("failed_tasks") or ())
    return [
        (str(c["task_id"]), str(c["output_uri"]), c.get("try_number"), bool(c.get("report_mode")))
        for c in items
        if str(c.get("output_uri") or "").endswith(".ipynb")
    ]


def _html_attachments(ctx: dict[str, Any], folder: str) -> list[str]:
    """Write each output notebook of the context as an HTML page in ``folder``; their paths."""
    import fsspec
    import nbformat

    from nbflow.tasks.nbexport import notebook_html

    paths = []
    for task_id, uri, try_number, report_mode in _notebooks(ctx):
        try:
            with fsspec.open(uri, "r", encoding="utf-8") as fh:
                nb = nbformat.read(fh, as_version=4)
            name = f"{ctx.get('pipeline')}-run{ctx.get('run_id')}-{task_id}-try{try_number}.html"
            path = os.path.join(folder, re.sub(r"[^\w.-]", "_", name))
            with open(path, "w", encoding="utf-8") as out:
                out.write(notebook_html(nb, exclude_input=report_mode))  # report_mode: no code, as export="html"
            paths.append(path)
        except Exception as exc:  # noqa: BLE001 - the message goes without it
            log.warning("could not attach the output notebook of %s as HTML: %s", task_id, exc)
    return paths


# --- sending -------------------------------------------------------------------------------------


class _Sender:
    """One daemon thread sending queued notifications in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # none yet, or lost in a fork
                self._thread = threading.Thread(target=self._loop, name="nbflow-notify", daemon=True)
                self._thread.start()
        self._queue.put(job)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except Exception:  # noqa: BLE001 - a notification never breaks anything
                log.exception("notification failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued notification was tried; whether they were."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True


_sender = _Sender()


def flush(timeout: float = EXIT_WAIT) -> bool:
    """Wait (up to ``timeout`` seconds) for the notifications queued in this process; whether all were tried."""
    return _sender.flush(timeout)


@atexit.register
def _at_exit() -> None:
    if not _sender.flush(EXIT_WAIT):
        log.warning("exiting with notifications not sent after %.0fs", EXIT_WAIT)


class Notifier:
    """The callable :func:`notify` returns: ``notifier(ctx)`` queues one message to every URL."""

    def __init__(self, urls: Iterable[str], *, attach: bool = True, timeout: float = 10.0, ui_url: str | None = None):
        self.urls = [str(u) for u in urls]
        self.attach, self.timeout, self.ui_url = bool(attach), float(timeout), ui_url

    def __repr__(self) -> str:
        return f"nbflow.notify({', '.join(mask_url(u) for u in self.urls)})"

    def __call__(self, ctx: dict[str, Any]) -> None:
        ctx = dict(ctx)
        _sender.submit(lambda: self.send(ctx))

    def send(self, ctx: dict[str, Any]) -> dict[str, bool]:
        """Send the message of ``ctx`` now (on the calling thread); {masked URL: whether it was sent}."""
        import apprise

        ui = self.ui_url
        if ui is None:
            from nbflow.config import get_settings

            ui = get_settings().ui_url
        title, body = message(ctx, ui)
        sent: dict[str, bool] = {}
        with tempfile.TemporaryDirectory(prefix="nbflow-notify-") as folder:
            pages = _html_attachments(ctx, folder) if self.attach else []
            for url in self.urls:
                shown = _scrub.add(url)
                sent[shown] = False
                try:
                    # on this thread, in order (it is a sender thread of its own; the sockets'
                    # timeouts bound each try): Apprise's thread pools refuse work once the
                    # interpreter shuts down, which is when a short `nbflow run` sends at exit
                    ap = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False, service_timeout=0))
                    if not ap.add(url):
                        log.warning("notification to %s not sent: not a URL Apprise knows", shown)
                        continue
                    for plugin in ap:
                        plugin.socket_connect_timeout = plugin.socket_read_timeout = self.timeout
                    attach = apprise.AppriseAttachment(pages) if pages else None
                    ok = ap.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT, attach=attach)
                    sent[shown] = bool(ok)
                    if ok:
                        log.info("notification sent to %s: %s", shown, title)
                    else:
                        log.warning("notification to %s failed (see apprise's log): %s", shown, title)
                except Exception as exc:  # noqa: BLE001
                    why = str(exc).replace(url, shown)
                    log.warning("notification to %s failed: %s: %s", shown, type(exc).__name__, why)
        return sent


def notify(*urls: str, attach: bool = True, timeout: float = 10.0, ui_url: str | None = None) -> Notifier:
    """A callback sending a message to each Apprise URL (``mailto://``, ``slack://``, ``json://``, ...).

    Use it as ``on_failure=``, ``on_success=``, ``on_retry=`` or ``on_sla_miss=``. ``attach``:
    a failed notebook task's output notebook goes along as HTML where the service takes
    attachments; ``timeout``: seconds per connection; ``ui_url``: the Jupyter server the
    message links to (default: the ``ui_url`` setting, ``NBFLOW_UI_URL``).
    """
    if not urls:
        from nbflow.exceptions import DefinitionError

        raise DefinitionError(
            "nbflow.notify() needs at least one Apprise URL",
            hint='e.g. nbflow.notify("mailto://user:pass@example.com")',
        )
    return Notifier(urls, attach=attach, timeout=timeout, ui_url=ui_url)
