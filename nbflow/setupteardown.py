"""Setup and teardown tasks (Airflow's), the model half: which tasks are setups and teardowns,
which setups a teardown belongs to, and what clearing or selecting a task brings with it.

A *setup* prepares something (a cluster, a temporary table) and its *teardown* removes it::

    s = create_cluster()                                    # @task(setup=True)
    s >> work() >> delete_cluster().as_teardown(setups=s)   # or @task(teardown=True, setups=[s])

A teardown runs when its upstream tasks finished and at least one of its setups succeeded,
whatever the work between them did (trigger rule ``all_done_setup_success``,
:func:`nbflow.rules.decide`), and it is left out of the run's outcome
(:func:`nbflow.rules.run_outcome`): failing work fails the run though the teardown, its last
task, succeeded. A teardown's setups are the ones given with ``setups=`` (each also becomes
an upstream task of it), else the setup tasks upstream of it (found walking up, not past another
setup or teardown). Selecting (``--only``) or clearing (``rerun``) a task brings its setups and
their teardowns (:func:`with_setups_and_teardowns`), as Airflow's clear does.

The functions here work on plain rows (``{"id", "upstream", "setup"?, "teardown"?, "setups"?}``,
the stored definition's task entries, or :func:`rows_of` a pipeline), so the run's re-run,
which reads a stored definition, and the engine, which holds the pipeline, share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nbflow.exceptions import DefinitionError

TEARDOWN_RULE = "all_done_setup_success"


class SetupTeardown:
    """Mixin of :class:`nbflow.dag.Task`: the task's role (setup, teardown or neither)."""

    is_setup: bool = False
    is_teardown: bool = False
    #: the setups a teardown names with ``setups=`` (empty: the setup tasks upstream of it)
    setup_ids: tuple[str, ...] = ()

    task_id: str
    trigger_rule: str

    if TYPE_CHECKING:

        def set_upstream(self, *others: Any) -> None: ...  # dag.Task's

    def set_role(self, *, setup: bool = False, teardown: bool = False, setups: Any = None) -> None:
        """Make this task a setup or a teardown (of ``setups``: task handles), as a kind's
        ``setup=``/``teardown=``/``setups=`` options ask; nothing when all are unset."""
        if setup and teardown:
            raise DefinitionError(
                f"task '{self.task_id}' is both a setup and a teardown",
                hint="a task is one or the other: setup=True, or teardown=True with setups=[...]",
            )
        if setups is not None and not teardown:
            raise DefinitionError(
                f"task '{self.task_id}' names setups= but is no teardown",
                hint="add teardown=True, or leave setups= out",
            )
        if setup:
            self.as_setup()
        elif teardown:
            self.as_teardown(setups=setups)

    def as_setup(self) -> Any:
        """Make this task a setup task; returns it (``create() .as_setup() >> work``)."""
        if self.is_teardown:
            raise DefinitionError(f"task '{self.task_id}' is a teardown already; it cannot be a setup too")
        self.is_setup = True
        return self

    def as_teardown(self, setups: Any = None) -> Any:
        """Make this task a teardown of ``setups`` (a handle or a list; they become setups and
        upstream tasks of it) and return it: ``s >> work >> delete().as_teardown(setups=s)``."""
        if self.is_setup:
            raise DefinitionError(f"task '{self.task_id}' is a setup already; it cannot be a teardown too")
        given = [] if setups is None else list(setups) if isinstance(setups, (list, tuple, set)) else [setups]
        for s in given:
            if not isinstance(s, SetupTeardown):
                raise DefinitionError(
                    f"teardown '{self.task_id}': setups= holds {s!r}, not a task",
                    hint="pass the handles of the setup tasks: setups=[create_cluster_task]",
                )
            s.as_setup()
        self.set_upstream(given)
        self.is_teardown = True
        self.trigger_rule = TEARDOWN_RULE
        self.setup_ids = tuple(dict.fromkeys([*self.setup_ids, *(s.task_id for s in given)]))
        return self

    def role_fields(self) -> dict[str, Any]:
        """The role as stored in a pipeline's definition (nothing for a plain task)."""
        if self.is_setup:
            return {"setup": True}
        if self.is_teardown:
            return {"teardown": True, "setups": list(self.setup_ids)}
        return {}


def rows_of(tasks: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task_id: row}`` of a pipeline's ``tasks`` (what the stored definition holds of them)."""
    return {tid: {"id": tid, "upstream": sorted(t.upstream_ids), **t.role_fields()} for tid, t in tasks.items()}


def by_id(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Definition rows keyed by task id."""
    return {r["id"]: r for r in rows}


def teardown_ids(rows: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The teardown tasks among ``rows``."""
    return {tid for tid, r in rows.items() if r.get("teardown")}


def setups_of(rows: Mapping[str, Mapping[str, Any]], teardown: str) -> list[str]:
    """The setups of ``teardown``: those it names, else the setup tasks found walking upstream
    from it (not past another setup or teardown)."""
    named = list(rows[teardown].get("setups") or ())
    if named:
        return named
    found: list[str] = []
    seen: set[str] = set()
    stack = list(rows[teardown]["upstream"])
    while stack:
        tid = stack.pop()
        if tid in seen or tid not in rows:
            continue
        seen.add(tid)
        if rows[tid].get("setup"):
            found.append(tid)
        elif not rows[tid].get("teardown"):
            stack.extend(rows[tid]["upstream"])
    return sorted(found)


def with_setups_and_teardowns(rows: Mapping[str, Mapping[str, Any]], chosen: Iterable[str]) -> set[str]:
    """``chosen`` with what must run with them again: a setup's teardowns, a teardown's setups,
    and for any other task the setups upstream of it that have no teardown or a teardown
    downstream of it, with their teardowns (Airflow's clear)."""
    out = set(chosen)
    teardowns = teardown_ids(rows)
    if not teardowns and not any(r.get("setup") for r in rows.values()):
        return out
    torn: dict[str, set[str]] = {}
    for t in teardowns:
        for s in setups_of(rows, t):
            torn.setdefault(s, set()).add(t)
    down: dict[str, list[str]] = {}
    for tid, r in rows.items():
        for up in r["upstream"]:
            down.setdefault(up, []).append(tid)
    for tid in list(out):
        row = rows.get(tid)
        if row is None:
            continue
        if row.get("setup"):
            out |= torn.get(tid, set())
        elif row.get("teardown"):
            out |= set(setups_of(rows, tid))
        else:
            below = _reach([tid], lambda x: down.get(x, ())) & teardowns
            for s in _reach([tid], lambda x: rows[x]["upstream"] if x in rows else ()):
                if rows.get(s, {}).get("setup") and (not torn.get(s) or torn[s] & below):
                    out |= {s, *torn.get(s, set())}
    return out


def _reach(start: Iterable[str], step: Any) -> set[str]:
    """Every task reachable from ``start`` (not counting it) along ``step(task)``."""
    seen: set[str] = set()
    stack = [n for s in start for n in step(s)]
    while stack:
        tid = stack.pop()
        if tid not in seen:
            seen.add(tid)
            stack.extend(step(tid))
    return seen
