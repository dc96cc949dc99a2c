"""Task groups (Airflow's ``TaskGroup`` and ``@task_group``): a name prefix, default task options
and one node to wire, for a section of a pipeline.

::

    with nbflow.group("section_1", default_args={"retries": 2}) as section_1:
        a = task_1()                 # id 'section_1.task_1', retries=2 unless it sets its own
        with nbflow.group("inner"):  # nested: 'section_1.inner.task_2'
            task_2(a)
    start >> section_1 >> end        # start before every entry task, every exit task before end

A group's **entry** tasks are its tasks (nested groups' too) with no upstream task inside it, its
**exit** tasks those with no downstream task inside it, computed when it is wired (as Airflow's
``get_roots``/``get_leaves``). A group is no task: the run knows only its tasks, whose ids carry
the prefix; :meth:`dag.Pipeline.definition` names each task's innermost group (``group``) and
lists the groups (``groups``: id, label, parent, tooltip) for pictures.

The pipeline holds its groups in a :class:`GroupTree` (``pipeline.groups``, made by the first
group), which dag consults when a task is made (:meth:`GroupTree.place`: its id, its group,
its default options); ``>>`` on tasks expands a group through :meth:`TaskGroup.wiring_ends`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from nbflow.dag import Pipeline, Task, _flatten, caller_site, check_default_args, current_pipeline
from nbflow.exceptions import DefinitionError

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")  # no dots: they join group and task names
_SUFFIX = re.compile(r"__\d+$")


class GroupTree:
    """A pipeline's task groups by id (in the order they were opened) and the open ones."""

    def __init__(self) -> None:
        self.groups: dict[str, TaskGroup] = {}
        self.open: list[TaskGroup] = []

    def place(self, task: Task, task_id: str) -> tuple[str, dict[str, Any]]:
        """For a task being made (``Task.__init__``): its id (prefixed by the open groups) and the
        innermost group's default task options (nested groups' merged, the inner one winning); sets
        its ``group_id``. A task whose id is a group's is an error (a group named like an earlier
        task is refused when it opens)."""
        inner = self.open[-1] if self.open else None
        full_id = inner.child_id(task_id) if inner else task_id
        if full_id in self.groups:
            raise self.groups[full_id].clash(full_id, f"{task.site[0]}:{task.site[1]}")
        task.group_id = inner.group_id if inner else None
        return full_id, inner.default_args if inner else {}

    def definition(self) -> list[dict[str, Any]]:
        """The groups as plain data, outer groups before the ones they hold."""
        return [g.definition() for g in self.groups.values()]


class TaskGroup:
    """A section of a pipeline; made by :func:`group` and entered with ``with``.

    ``prefix_group_id=False`` keeps the plain ids of the tasks (and nested groups) inside it,
    as in Airflow; the group still draws as one box and wires as one node.
    """

    def __init__(
        self,
        group_id: str,
        *,
        prefix_group_id: bool = True,
        default_args: Mapping[str, Any] | None = None,
        tooltip: str = "",
        suffix_on_collision: bool = False,
    ):
        self.site = caller_site()
        self.where = f"{self.site[0]}:{self.site[1]}"
        if not isinstance(group_id, str) or not _GROUP_NAME.match(group_id):
            raise DefinitionError(
                f"invalid task group name {group_id!r}",
                where=self.where,
                hint="use letters, digits, '_' or '-' (no '.': it joins a group's name to its tasks' names)",
            )
        self.label = group_id
        self.prefix_group_id = bool(prefix_group_id)
        self.own_default_args = check_default_args(default_args, f"group '{group_id}'", self.where)
        self.tooltip = str(tooltip)
        self.suffix_on_collision = suffix_on_collision
        self.pipeline: Pipeline | None = None
        self.parent: TaskGroup | None = None
        self.group_id = self.label
        self.default_args = dict(self.own_default_args)

    # -- entering: the group joins the active pipeline (once) -----------------------------------
    def __enter__(self) -> TaskGroup:
        pipeline = current_pipeline()
        if pipeline is None:
            raise DefinitionError(
                f"task group '{self.label}' is opened outside a pipeline",
                where=self.where,
                hint="open it inside `with Pipeline('name') as pipeline:`",
            )
        if pipeline.groups is None:
            pipeline.groups = GroupTree()
        tree: GroupTree = pipeline.groups
        if self.pipeline is None:
            self._join(pipeline, tree)
        elif self.pipeline is not pipeline:
            raise DefinitionError(
                f"task group '{self.group_id}' belongs to pipeline '{self.pipeline.name}', not '{pipeline.name}'",
                where=self.where,
                hint="make a new nbflow.group(...) inside each pipeline",
            )
        tree.open.append(self)
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.pipeline is not None and self.pipeline.groups is not None
        self.pipeline.groups.open.remove(self)

    def _join(self, pipeline: Pipeline, tree: GroupTree) -> None:
        self.parent = tree.open[-1] if tree.open else None
        if self.parent is not None:
            self.default_args = {**self.parent.default_args, **self.own_default_args}
        if self.suffix_on_collision and self._id_of(self.label) in tree.groups:  # a group function called again
            base, n = _SUFFIX.sub("", self.label), 1
            while self._id_of(f"{base}__{n}") in tree.groups:
                n += 1
            self.label = f"{base}__{n}"
        self.group_id = self._id_of(self.label)
        if self.group_id in tree.groups:
            first = tree.groups[self.group_id]
            raise DefinitionError(
                f"pipeline '{pipeline.name}' opens task group '{self.group_id}' twice "
                f"(first at {first.where}, again at {self.where})",
                where=self.where,
                hint=f"give one of them another name, or re-enter the first one: `with {self.label}:`",
            )
        if self.group_id in pipeline.tasks:
            task = pipeline.tasks[self.group_id]
            raise self.clash(task.task_id, f"{task.site[0]}:{task.site[1]}")
        self.pipeline = pipeline
        tree.groups[self.group_id] = self

    def _id_of(self, label: str) -> str:
        return self.parent.child_id(label) if self.parent is not None else label

    def child_id(self, label: str) -> str:
        """The id of a task or group named ``label`` made inside this group."""
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def clash(self, task_id: str, task_where: str) -> DefinitionError:
        """The error for a task (made at ``task_where``) whose id is this group's id."""
        return DefinitionError(
            f"task group '{self.group_id}' (at {self.where}) and task '{task_id}' (at {task_where}) have the same id",
            where=self.where,
            hint="rename one: nbflow.group('other_name') or the task's name='other_name' "
            "(task ids and group ids share one namespace, as in Airflow)",
        )

    # -- what the group holds -----------------------------------------------------------------
    def tasks(self) -> list[Task]:
        """Every task made inside this group or a group nested in it."""
        if self.pipeline is None or self.pipeline.groups is None:
            return []
        inside = {gid for gid, g in self.pipeline.groups.groups.items() if self in g.ancestry()}
        return [t for t in self.pipeline.tasks.values() if t.group_id in inside]

    def ancestry(self) -> Iterator[TaskGroup]:
        """This group, its parent, ... up to the outermost."""
        grp: TaskGroup | None = self
        while grp is not None:
            yield grp
            grp = grp.parent

    def entry_tasks(self) -> list[Task]:
        """Tasks with no upstream task inside the group (Airflow's roots)."""
        tasks = self.tasks()
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.upstream_ids & ids)]

    def exit_tasks(self) -> list[Task]:
        """Tasks with no downstream task inside the group (Airflow's leaves)."""
        tasks = self.tasks()
        feeding = {u for t in tasks for u in t.upstream_ids}  # each has a downstream task inside
        return [t for t in tasks if t.task_id not in feeding]

    def wiring_ends(self, ends: str, peer: Any = None) -> list[Task]:
        """Entry tasks (``ends="roots"``: this group is downstream of ``peer``) or exit tasks
        (``"leaves"``: upstream of it), for ``>>``; an empty group is an error naming ``peer``."""
        found = self.entry_tasks() if ends == "roots" else self.exit_tasks()
        if not found:
            other = _describe(peer)
            raise DefinitionError(
                f"task group '{self.group_id}' has no tasks yet, so it cannot be wired "
                f"{'after' if ends == 'roots' else 'before'} {other}",
                where=self.where,
                hint=f"make its tasks inside `with nbflow.group('{self.label}'):` first, and wire the group "
                "after that block (e.g. start >> group >> end)",
            )
        return found

    # -- wiring: a group stands for its entry tasks downstream and its exit tasks upstream -------
    def set_upstream(self, *others: Any) -> None:
        """Make every entry task run after ``others`` (tasks or groups: their exit tasks)."""
        entries = self.wiring_ends("roots", others)
        upstream = list(_flatten(others, "leaves", self))  # groups among them: their exit tasks
        for entry in entries:
            entry.set_upstream(upstream)

    def __rshift__(self, other: Any) -> Any:
        for o in _flat([other]):
            target: Any = _wireable(o, self)  # a task's set_upstream expands a group too (dag._flatten)
            target.set_upstream(self)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> TaskGroup:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Any:
        return self.__rshift__(other)

    def __call__(self, fn: Callable[..., Any]) -> GroupFunction:
        """``@nbflow.group("name", ...)`` on a function: see :class:`GroupFunction`."""
        return GroupFunction(fn, self.label, self._options())

    def _options(self) -> dict[str, Any]:
        return {"prefix_group_id": self.prefix_group_id, "default_args": self.own_default_args, "tooltip": self.tooltip}

    def definition(self) -> dict[str, Any]:
        """Plain data for pictures: id, label (its own name), parent group id, tooltip."""
        parent = self.parent.group_id if self.parent else None
        return {"id": self.group_id, "label": self.label, "parent": parent, "tooltip": self.tooltip}

    def __repr__(self) -> str:
        return f"<TaskGroup {self.group_id!r}>"


class GroupFunction:
    """A function decorated with ``@nbflow.group`` (Airflow's ``@task_group``): each call inside a
    pipeline opens a new group named after the function (``name__1``, ``name__2``... on later
    calls), runs the function in it and returns the task the function returns (so its value can
    flow on), else the group (to wire: ``start >> section(1) >> end``)."""

    def __init__(self, fn: Callable[..., Any], group_id: str | None, options: Mapping[str, Any]):
        functools.update_wrapper(self, fn)
        self.fn, self.group_id, self.options = fn, group_id or fn.__name__, dict(options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        grp = TaskGroup(self.group_id, suffix_on_collision=True, **self.options)
        with grp:
            value = self.fn(*args, **kwargs)
        return value if isinstance(value, Task) else grp


def group(
    group_id: str | Callable[..., Any] | None = None,
    *,
    prefix_group_id: bool = True,
    default_args: Mapping[str, Any] | None = None,
    tooltip: str = "",
) -> Any:
    """A task group: ``with nbflow.group("section_1") as g:``, or a decorator (``@nbflow.group``,
    ``@nbflow.group("name", default_args={...})``) for a function that makes a group's tasks.

    Tasks made inside get the id ``section_1.<task>`` (unless ``prefix_group_id=False``) and the
    group's ``default_args`` under their own options; ``g >> other``, ``other >> g`` and
    ``[g1, g2] >> g3`` wire the group's exit and entry tasks.
    """
    options: dict[str, Any] = {"prefix_group_id": prefix_group_id, "default_args": default_args, "tooltip": tooltip}
    if callable(group_id):
        return GroupFunction(group_id, None, options)
    if group_id is None:
        return lambda fn: GroupFunction(fn, None, options)
    return TaskGroup(group_id, **options)


def _flat(items: Iterable[Any]) -> Iterator[Any]:
    """The items of nested lists, groups as they are (dag's ``_flatten`` expands them)."""
    for item in items:
        if isinstance(item, (list, tuple, set)):
            yield from _flat(item)
        else:
            yield item


def _wireable(obj: Any, grp: TaskGroup) -> Task | TaskGroup:
    if isinstance(obj, (Task, TaskGroup)):
        return obj
    raise DefinitionError(
        f"cannot order task group '{grp.group_id}' before {obj!r}: not a task or task group",
        where=grp.where,
        hint="order task handles or groups: group >> task, group >> [a, b], g1 >> g2",
    )


def _describe(peer: Any) -> str:
    names = [
        f"task '{p.task_id}'" if isinstance(p, Task) else f"task group '{p.group_id}'"
        for p in _flat(peer if isinstance(peer, (list, tuple, set)) else [peer])
        if isinstance(p, (Task, TaskGroup))
    ]
    return ", ".join(names) or "anything"
