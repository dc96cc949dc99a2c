"""Graphviz pictures of a pipeline, nodes coloured by task state.

:func:`to_dot` builds DOT text from a pipeline definition (``Pipeline.definition()`` or
the one stored with a version) and optional ``{task_id: state}``; :func:`render` turns it
into SVG/PNG bytes with the ``dot`` program (Debian package ``graphviz``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nbflow.exceptions import NbflowError
from nbflow.states import FINISHED

#: fill colour per state (also used by the JupyterLab extension and widgets).
STATE_COLORS = {
    None: "#ffffff",
    "pending": "#f5f5f5",
    "queued": "#d0d7e2",
    "running": "#8fd3ff",
    "up_for_retry": "#ffd27f",
    "success": "#8fdb8f",
    "cached": "#80cbc4",  # teal: succeeded without running (an incremental run reused it)
    "failed": "#ff8a80",
    "upstream_failed": "#ffb74d",
    "skipped": "#e0e0e0",
    "cancelled": "#bdbdbd",
}
KIND_SHAPES = {"python": "box", "notebook": "note", "shell": "cds", "sensor": "hexagon", "cell": "component"}


def fmt_duration(seconds: float | None) -> str:
    """``4.2s``, ``3m05s``, ``1h02m`` (``-`` when unknown): how every transport shows a duration."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def map_badges(rows: Iterable[Any]) -> dict[str, str]:
    """``{mapped task: "2/3"}`` from a run's task instance rows: its finished and all instances."""
    done: dict[str, list[int]] = {}
    for row in rows:
        if row.get("map_count") is not None:
            done.setdefault(row["task_id"], [0, 0])[1] = row["map_count"]
        parent = row.get("map_parent")
        if parent is not None:
            done.setdefault(parent, [0, 0])[0] += row["state"] in FINISHED
    return {tid: f"{n}/{total}" for tid, (n, total) in done.items()}


def to_dot(
    definition: Mapping[str, Any], states: Mapping[str, str] | None = None, badges: Mapping[str, str] | None = None
) -> str:
    """DOT text: one node per task (id, kind label, state), one edge per dependency. A mapped task
    is one node with a count badge: ``train [2/3]`` (finished/all instances, from ``badges``), or
    ``train [mapped]`` before it expands."""
    states, badges = states or {}, badges or {}
    lines = [
        f"digraph {_q(definition['name'])} {{",
        # no white page: the picture sits on the notebook's (or the DAG view's) background, dark
        # themes too; grey edges read on light and dark, node text is dark on the state colours
        '  rankdir=LR; bgcolor="transparent";',
        '  node [style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.2, color="#666666"];',
        '  edge [color="#8a8a8a", arrowsize=0.7];',
    ]
    for t in definition["tasks"]:
        state = states.get(t["id"])
        badge = f" [{badges.get(t['id'], 'mapped')}]" if t.get("mapped") else ""
        label = t["id"] + badge + "\\n" + t.get("label", t["kind"]).replace('"', "'")
        if state:
            label += f"\\n[{state}]"
        shape = KIND_SHAPES.get(t["kind"], "box")
        style = '"filled"' if shape in ("note", "cds", "component", "hexagon") else '"rounded,filled"'
        lines.append(
            f'  {_q(t["id"])} [label="{label}", shape={shape}, style={style}, '
            f'fillcolor="{STATE_COLORS.get(state, "#ffffff")}", class={_q("nbflow-" + (state or "none"))}, '
            f"id={_q('task-' + t['id'])}];"
        )
    for t in definition["tasks"]:
        for up in t["upstream"]:
            lines.append(f"  {_q(up)} -> {_q(t['id'])};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot: str, fmt: str = "svg") -> bytes:
    """Render DOT text with graphviz's ``dot`` (svg, png, pdf ...)."""
    import graphviz

    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise NbflowError(
            "graphviz's 'dot' program is not installed",
            hint="install it: apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS)",
        ) from exc
    except graphviz.backend.CalledProcessError as exc:
        raise NbflowError(f"graphviz could not render the DAG as {fmt}: {exc.stderr!r}") from exc
