"""Many small writes as a few ``executemany`` calls, with the same results as one by one.

An engine step writes a handful of statements per task (a compare-and-set of the task's
state, its attempt row, its artifacts). For a step that finishes or queues hundreds of
tasks, the per-statement cost of SQLAlchemy and the driver dominates. :func:`record` runs
the step's operations against a :class:`Recorder` instead of a connection: nothing is
executed, each ``execute`` is remembered and answers "one row changed". The recorded
statements are grouped by statement (and parameter names) and :func:`apply` executes each
group as one ``executemany``:

* **Order.** Groups run in order of first appearance. A statement that touches a row
  (table, run, task) which an earlier statement of *another* group touched starts a new
  segment, so writes to one row keep their order; a statement without a row key (a
  run-state change) is a segment of its own.
* **Compare-and-set.** Where an operation read ``rowcount`` (its write was conditional),
  the group's total must equal its number of rows. If not, :class:`Mismatch` is raised;
  the caller rolls the transaction back and runs the operations one by one, so every
  operation gets its true result.
* **Reads.** An operation that reads (``.scalar()``, ``.first()``, a savepoint ...) cannot
  be recorded: :func:`record` returns None and the caller runs them one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection


class Unbatchable(Exception):
    """An operation needs a real result (a read); it must run on the connection."""


class Mismatch(Exception):
    """A conditional write of a batch changed no row: run the operations one by one."""


class _Result:
    """What a recorded ``execute`` returns: one row changed (checked when applied)."""

    def __init__(self, call: _Call):
        self._call = call

    @property
    def rowcount(self) -> int:
        self._call.checked = True
        return 1

    def __getattr__(self, name: str) -> Any:
        raise Unbatchable(name)


@dataclass
class _Call:
    stmt: Any
    rows: list[dict[str, Any]] | None
    checked: bool = False


class Recorder:
    """Stands in for a :class:`~sqlalchemy.Connection`: records ``execute`` calls."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def execute(self, stmt: Any, parameters: Any = None) -> _Result:
        rows = None if parameters is None else [parameters] if isinstance(parameters, dict) else list(parameters)
        call = _Call(stmt, rows)
        self.calls.append(call)
        return _Result(call)

    def __getattr__(self, name: str) -> Any:
        raise Unbatchable(name)


@dataclass
class _Group:
    stmt: Any
    rows: list[dict[str, Any]] | None = field(default_factory=list)
    checked: bool = False


@dataclass
class Plan:
    """Recorded operations: their results (as if each write matched) and the grouped writes."""

    results: list[Any]
    groups: list[_Group]


def record(ops: Sequence[Callable[[Any], Any]], make_tx: Callable[[Any], Any]) -> Plan | None:
    """Run ``ops`` against a :class:`Recorder` wrapped by ``make_tx``; None if one reads."""
    recorder = Recorder()
    tx = make_tx(recorder)
    try:
        results = [op(tx) for op in ops]
    except Unbatchable:
        return None
    return Plan(results, _group(recorder.calls))


def apply(conn: Connection, plan: Plan) -> list[Any]:
    """Execute a plan's groups; raise :class:`Mismatch` if a conditional write matched nothing."""
    for group in plan.groups:
        res = conn.execute(group.stmt) if group.rows is None else conn.execute(group.stmt, group.rows)
        expected = 1 if group.rows is None else len(group.rows)
        if group.checked and res.rowcount != expected:
            raise Mismatch(f"{res.rowcount} of {expected} conditional writes matched")
    return plan.results


def _group(calls: list[_Call]) -> list[_Group]:
    groups: list[_Group] = []
    segment: dict[tuple, _Group] = {}  # group key -> group, in the current segment
    owner: dict[tuple, tuple] = {}  # row key -> group key that touched it in this segment
    for call in calls:
        keys = _row_keys(call)
        if keys is None:  # no row key: a segment of its own
            groups.append(_Group(call.stmt, call.rows, call.checked))
            segment, owner = {}, {}
            continue
        gkey = (id(call.stmt), tuple(sorted(call.rows[0])) if call.rows else ())
        if any(owner.get(k, gkey) != gkey for k in keys):
            segment, owner = {}, {}
        group = segment.get(gkey)
        if group is None:
            group = segment[gkey] = _Group(call.stmt)
            groups.append(group)
        assert group.rows is not None and call.rows is not None  # keyed calls carry rows; their groups a list
        group.rows.extend(call.rows)
        group.checked = group.checked or call.checked
        owner.update((k, gkey) for k in keys)
    return groups


def _row_keys(call: _Call) -> list[tuple] | None:
    """(table, run, task) of each row a call writes; None when a row is not named."""
    table = getattr(getattr(call.stmt, "table", None), "name", None)
    if table is None or not call.rows:
        return None
    keys = []
    for row in call.rows:
        run, task = row.get("w_run_id", row.get("run_id")), row.get("w_task_id", row.get("task_id"))
        if run is None or task is None:
            return None
        keys.append((table, run, task))
    return keys
