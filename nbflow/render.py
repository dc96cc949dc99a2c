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
KIND_SHAPES = {
    "python": "box",
    "notebook": "note",
    "shell": "cds",
    "sensor": "hexagon",
    "cell": "component",
    "sql": "cylinder",
}


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
    definition: Mapping[str, Any],
    states: Mapping[str, str] | None = None,
    badges: Mapping[str, str] | None = None,
    collapsed: Iterable[str] = (),
) -> str:
    """DOT text: one node per task (id, kind label, state), one edge per dependency. A mapped task
    is one node with a count badge: ``train [2/3]`` (finished/all instances, from ``badges``), or
    ``train [mapped]`` before it expands. Task groups are clusters (``subgraph "cluster_<group>"``,
    nested as the groups are, labelled with the group's name); a group in ``collapsed`` is one node
    instead, with a summary of its tasks' states (see :mod:`nbflow.groups`)."""
    states, badges = states or {}, badges or {}
    lines = [
        f"digraph {_q(definition['name'])} {{",
        # no white page: the picture sits on the notebook's (or the DAG view's) background, dark
        # themes too; grey edges read on light and dark, node text is dark on the state colours
        '  rankdir=LR; bgcolor="transparent";',
        '  node [style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.2, color="#666666"];',
        '  edge [color="#8a8a8a", arrowsize=0.7];',
    ]
    layout = _GroupLayout(definition, set(collapsed))
    for t in definition["tasks"]:
        if layout.drawn_as[t["id"]] != t["id"]:  # drawn as its collapsed group
            continue
        state = states.get(t["id"])
        badge = f" [{badges.get(t['id'], 'mapped')}]" if t.get("mapped") else ""
        label = layout.name_in_cluster(t) + badge + "\\n" + t.get("label", t["kind"]).replace('"', "'")
        if state:
            label += f"\\n[{state}]"
        shape = KIND_SHAPES.get(t["kind"], "box")
        style = '"filled"' if shape in ("note", "cds", "component", "hexagon") else '"rounded,filled"'
        layout.add_node(
            t.get("group"),
            f'{_q(t["id"])} [label="{label}", shape={shape}, style={style}, '
            f'fillcolor="{STATE_COLORS.get(state, "#ffffff")}", class={_q("nbflow-" + (state or "none"))}, '
            f"id={_q('task-' + t['id'])}];",
        )
    layout.add_collapsed_nodes(states)
    lines.extend(layout.clusters(None, "  "))
    lines.extend(f"  {_q(a)} -> {_q(b)};" for a, b in layout.edges())
    lines.append("}")
    return "\n".join(lines) + "\n"


class _GroupLayout:
    """Where each task's node goes: in the cluster of its innermost group, or (when that group or
    one around it is collapsed) folded into the node of its outermost collapsed group."""

    def __init__(self, definition: Mapping[str, Any], collapsed: set[str]):
        self.definition = definition
        self.groups = {g["id"]: g for g in definition.get("groups") or []}  # older definitions have none
        self.members: dict[str, list[str]] = {}  # collapsed group -> the tasks it stands for
        self.drawn_as: dict[str, str] = {}  # task id -> the DOT node it is drawn as: its own, or its group's
        for t in definition["tasks"]:
            outer = next((g for g in reversed(self._ancestry(t.get("group"))) if g in collapsed), None)
            self.drawn_as[t["id"]] = t["id"] if outer is None else "group:" + outer  # ':' is in no task id
            if outer is not None:
                self.members.setdefault(outer, []).append(t["id"])
        self.nodes: dict[str | None, list[str]] = {}  # group (None: none) -> its node lines

    def _ancestry(self, gid: str | None) -> list[str]:
        """``[gid, its parent, ...]`` (unknown groups end the chain)."""
        chain: list[str] = []
        while gid is not None and gid in self.groups and gid not in chain:
            chain.append(gid)
            gid = self.groups[gid].get("parent")
        return chain

    def name_in_cluster(self, task: Mapping[str, Any]) -> str:
        """A task's id without its group's prefix (the cluster's label says it): ``task_2`` in
        ``section_1``, as Airflow draws it."""
        gid, tid = task.get("group") or "", task["id"]
        return tid[len(gid) + 1 :] if gid in self.groups and tid.startswith(f"{gid}.") else tid

    def add_node(self, gid: str | None, line: str) -> None:
        self.nodes.setdefault(gid if gid in self.groups else None, []).append(line)

    def add_collapsed_nodes(self, states: Mapping[str, str]) -> None:
        """One node per outermost collapsed group: its name, task count and states (the most
        pressing state colours it), in its parent group's cluster."""
        for gid, tasks in self.members.items():
            found = [states[t] for t in tasks if t in states]
            counts = {s: found.count(s) for s in dict.fromkeys(found)}
            state = next((s for s in _SUMMARY_ORDER if s in counts), None)
            summary = " · ".join(f"{n} {s}" for s, n in counts.items()) or "not run"
            label = f"{self.groups[gid]['label']} ▸ ({len(tasks)} tasks)\\n{summary}".replace('"', "'")
            self.add_node(
                self.groups[gid].get("parent"),
                f'{_q("group:" + gid)} [label="{label}", shape=box3d, style="filled", '
                f'fillcolor="{STATE_COLORS.get(state, "#ffffff")}", '
                f"class={_q('nbflow-group-collapsed nbflow-' + (state or 'none'))}, id={_q('group-' + gid)}];",
            )

    def clusters(self, parent: str | None, indent: str) -> list[str]:
        """The node lines of ``parent``'s cluster, after its expanded child groups as clusters."""
        lines: list[str] = []
        for gid, g in self.groups.items():
            if g.get("parent") != parent or gid in self.members or not self._holds_nodes(gid):
                continue
            lines.append(f"{indent}subgraph {_q('cluster_' + gid)} {{")
            lines.append(
                f"{indent}  label={_q(g['label'])}; tooltip={_q(g.get('tooltip') or gid)}; "
                f'id={_q("group-" + gid)}; class="nbflow-group"; style="rounded,dashed"; color="#8a8a8a"; '
                'fontname="Helvetica"; fontsize=11; labeljust=l;'
            )
            lines.extend(self.clusters(gid, indent + "  "))
            lines.append(f"{indent}}}")
        lines.extend(indent + line for line in self.nodes.get(parent, []))
        return lines

    def _holds_nodes(self, gid: str) -> bool:
        return bool(self.nodes.get(gid)) or any(
            g.get("parent") == gid and self._holds_nodes(child) for child, g in self.groups.items()
        )

    def edges(self) -> list[tuple[str, str]]:
        """Dependencies between drawn nodes, once each (edges inside a collapsed group vanish)."""
        found: dict[tuple[str, str], None] = {}
        for t in self.definition["tasks"]:
            for up in t["upstream"]:
                a, b = self.drawn_as.get(up, up), self.drawn_as[t["id"]]
                if a != b:
                    found[a, b] = None
        return list(found)


#: Which state colours a collapsed group: the first of these that one of its tasks is in.
_SUMMARY_ORDER = (
    "failed", "upstream_failed", "up_for_retry", "running", "queued", "pending",
    "cancelled", "skipped", "success", "cached",
)  # fmt: skip


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
