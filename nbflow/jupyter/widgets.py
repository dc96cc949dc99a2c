"""What a run looks like in a notebook: a live ipywidgets view and static HTML tables.

:class:`RunView` is an engine listener. The engine calls it in the kernel's thread while
``%nbflow run`` executes, and every change of a widget's value is sent to the front end at
once as a comm message, so the view updates while the cell is still running. A small
ticker thread advances the durations of running tasks each second.

Each task's state is a badge ``<span class="nbflow-state" data-task=ID data-state=STATE>``
coloured like the DAG pictures (:data:`nbflow.render.STATE_COLORS`).
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from nbflow.render import STATE_COLORS, fmt_duration

FINAL = {"success", "cached", "failed", "upstream_failed", "skipped", "cancelled"}
_CSS = "border-collapse:collapse;font-size:13px"
_TD = "padding:2px 10px;text-align:left;vertical-align:top"


def badge(task_id: str, state: str | None) -> str:
    """A coloured state label (its attributes let tests and scripts read it)."""
    state = state or "pending"
    colour = STATE_COLORS.get(state, "#ffffff")
    return (
        f'<span class="nbflow-state" data-task="{html.escape(task_id)}" data-state="{state}" '
        f'style="background:{colour};padding:1px 8px;border-radius:8px;border:1px solid #999">{state}</span>'
    )


def _link(path: str | None, text: str) -> str:
    """A link to a file of the run: relative to the notebook's folder when it is below it."""
    if not path:
        return ""
    rel = os.path.relpath(path, os.getcwd()) if "://" not in path else path
    href = rel if not rel.startswith("..") else path
    return f'<a href="{html.escape(href)}" target="_blank" title="{html.escape(path)}">{text}</a>'


def links(row: Mapping[str, Any]) -> str:
    """Links to a task instance's log and output notebook."""
    parts = [_link(row.get("log_uri"), "log"), _link(row.get("output_uri"), "notebook")]
    return " · ".join(p for p in parts if p)


def failure_html(task_id: str, attempt: Mapping[str, Any]) -> str:
    """A failed attempt in a few lines: its message, then the failing cell's traceback (folded)."""
    message = attempt.get("message") or attempt.get("evalue") or attempt.get("reason") or "failed"
    text = f"<b>{html.escape(task_id)}</b> (try {attempt.get('try_number')}): {html.escape(str(message))}"
    tb = attempt.get("traceback")
    if tb:
        text += (
            '<details><summary>traceback</summary><pre style="font-size:12px;margin:2px 0">'
            f"{html.escape(tb.strip())}</pre></details>"
        )
    out = _link(attempt.get("output_uri"), "output notebook")
    return (
        f'<div style="margin:4px 0;border-left:3px solid {STATE_COLORS["failed"]};padding-left:8px">{text}{out}</div>'
    )


def failures(details: Mapping[str, Any]) -> list[str]:
    """HTML for the latest failed attempt of each task that did not succeed."""
    latest: dict[str, Mapping[str, Any]] = {}
    for attempt in details.get("attempts", []):
        if attempt["state"] in ("failed", "up_for_retry") and (attempt.get("message") or attempt.get("ename")):
            latest[attempt["task_id"]] = attempt
    states = {t["task_id"]: t["state"] for t in details.get("tasks", [])}
    return [failure_html(tid, a) for tid, a in latest.items() if states.get(tid) not in ("success", "cached")]


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f'<th style="{_TD}">{h}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{_TD}">{c}</td>' for c in row) + "</tr>" for row in rows)
    return f'<table style="{_CSS}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def run_header(run: Mapping[str, Any], elapsed: float | None = None) -> str:
    """``run 3 of demo: running (4.1s)``."""
    took = f" ({fmt_duration(elapsed)})" if elapsed is not None else ""
    return f"<b>run {run['id']}</b> of <b>{html.escape(run['pipeline'])}</b>: {badge('_run', run['state'])}{took}"


def run_html(details: Mapping[str, Any]) -> str:
    """A run as a static table (``Run._repr_html_``, ``%nbflow status``)."""
    run = details["run"]
    arts: dict[str, list[str]] = {}
    for a in details.get("artifacts", []):
        arts.setdefault(a["task_id"], []).append(a["name"])
    tasks = details.get("tasks", [])
    why = any(t.get("why") for t in tasks)  # an incremental run: why each task ran or was reused
    rows = [
        (
            html.escape(t["task_id"]),
            badge(t["task_id"], t["state"]),
            f"{t['try_number']}/{t['max_tries']}",
            fmt_duration(t.get("duration")),
            html.escape(", ".join(arts.get(t["task_id"], []))),
            links(t),
            *((why_html(t.get("why")),) if why else ()),
        )
        for t in tasks
    ]
    took = None
    if run.get("ended_at") and run.get("started_at"):
        took = (run["ended_at"] - run["started_at"]).total_seconds()
    table = _table(("task", "state", "tries", "duration", "outputs", "", *(("why",) if why else ())), rows)
    return f"<div>{run_header(run, took)}{table}{''.join(failures(details))}</div>"


def why_html(why: str | None) -> str:
    """Why an incremental run reused a task or ran it (grey, small)."""
    return f'<span class="nbflow-why" style="color:#555">{html.escape(why)}</span>' if why else ""


def runs_html(runs: Iterable[Mapping[str, Any]]) -> str:
    """Recent runs as a table (``%nbflow runs``)."""
    rows = []
    for r in runs:
        took = (r["ended_at"] - r["started_at"]).total_seconds() if r.get("ended_at") and r.get("started_at") else None
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r.get("task_counts", {}).items()))
        created = r["created_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.get("created_at") else "-"
        rows.append(
            (
                str(r["id"]),
                html.escape(r["pipeline"]),
                badge(str(r["id"]), r["state"]),
                r["trigger"],
                created,
                fmt_duration(took),
                counts,
            )
        )
    return _table(("run", "pipeline", "state", "trigger", "created", "duration", "tasks"), rows)


def compare_html(data: Mapping[str, Any]) -> str:
    """Runs' params and metrics side by side (``api.compare``'s data; a sweep's end)."""
    from nbflow import api

    title = f"<b>sweep {data['sweep']['id']} of {html.escape(data['sweep']['pipeline'])}</b>" if data["sweep"] else ""
    rows = [
        [str(row[0]), badge(str(row[0]), row[1]), *(html.escape(api.format_value(v)) for v in row[2:])]
        for row in api.compare_rows(dict(data))
    ]
    return title + _table([html.escape(c) for c in api.compare_columns(dict(data))], rows)


class _Row:
    """The widgets of one task's row."""

    def __init__(self, task_id: str, state: str, max_tries: int):
        import ipywidgets as w

        self.task_id, self.state, self.max_tries = task_id, state, max_tries
        self.started: float | None = None
        self.name = w.HTML(f"<b>{html.escape(task_id)}</b>")
        self.badge = w.HTML(badge(task_id, state))
        self.tries = w.HTML(f"0/{max_tries}")
        self.duration = w.HTML("-")
        self.extra = w.HTML("")
        self.widgets = [self.name, self.badge, self.tries, self.duration, self.extra]


class RunView:
    """A live view of one run; call it with engine task events (it is a listener)."""

    def __init__(self, details: Mapping[str, Any], tick: float = 1.0):
        import ipywidgets as w

        self.run = dict(details["run"])
        self.started = time.time()
        self.rows = {t["task_id"]: _Row(t["task_id"], t["state"], t["max_tries"]) for t in details["tasks"]}
        self.header = w.HTML(run_header({**self.run, "state": "running"}, 0.0))
        grid = w.GridBox(
            [x for row in self.rows.values() for x in row.widgets],
            layout=w.Layout(grid_template_columns="max-content 9em 4em 5em auto", grid_gap="0px 12px"),
        )
        self.problems = w.HTML("")
        self.widget = w.VBox([self.header, grid, self.problems])
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._tick = tick
        self._ticker: threading.Thread | None = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
        if self._ticker is None and self._tick:
            self._ticker = threading.Thread(target=self._tick_loop, name="nbflow-run-view", daemon=True)
            self._ticker.start()

    def __call__(self, event: Any) -> None:
        """Show one task event (state, try, duration, message) at once."""
        state = getattr(event.state, "value", event.state)
        with self._lock:
            row = self.rows.get(event.task_id)
            if row is None:
                return
            row.state = state
            row.badge.value = badge(event.task_id, state)
            row.tries.value = f"{event.try_number}/{row.max_tries}"
            if state == "running":
                row.started = event.at
                row.duration.value = "0.0s"
            elif event.duration is not None:
                row.duration.value = fmt_duration(event.duration)
            if event.message and state not in ("success", "cached"):
                row.extra.value = f'<span style="color:#b00">{html.escape(event.message.splitlines()[0])}</span>'
            elif state in ("running", "queued", "cached"):
                row.extra.value = why_html(getattr(event, "why", None))
            self.header.value = run_header({**self.run, "state": "running"}, time.time() - self.started)

    def finish(self, details: Mapping[str, Any]) -> None:
        """Show the final states, links to logs and output notebooks, and what failed."""
        self._stop.set()
        with self._lock:
            for t in details["tasks"]:
                row = self.rows.get(t["task_id"])
                if row is None:
                    continue
                row.state = t["state"]
                row.badge.value = badge(t["task_id"], t["state"])
                row.tries.value = f"{t['try_number']}/{t['max_tries']}"
                row.duration.value = fmt_duration(t.get("duration"))
                error = (
                    f'<span style="color:#b00">{html.escape((t.get("error") or "").splitlines()[0])}</span> '
                    if t.get("error")
                    else ""
                )
                why = why_html(t.get("why"))
                row.extra.value = error + links(t) + (f" · {why}" if why and links(t) else why)
            run = details["run"]
            took = (
                (run["ended_at"] - run["started_at"]).total_seconds()
                if run.get("ended_at") and run.get("started_at")
                else None
            )
            self.header.value = run_header(run, took)
            self.problems.value = "".join(failures(details))

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.time()
            with self._lock:
                if self._stop.is_set():
                    return
                for row in self.rows.values():
                    if row.state == "running" and row.started is not None:
                        row.duration.value = fmt_duration(now - row.started)
                self.header.value = run_header({**self.run, "state": "running"}, now - self.started)
