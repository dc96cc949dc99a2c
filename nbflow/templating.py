"""Jinja2 templates in task fields: ``shell("load --day {{ ds }}")``, ``parameters={"run_date":
"{{ ds }}"}``, ``reads=["data/{{ ds_nodash }}.csv"]``, string arguments of ``@task``.

A string is a template when it holds ``{{``, ``{%`` or ``{#``; other strings are left alone.
Templates render in a sandboxed environment with ``StrictUndefined``, so a name nobody
defined is an error, never an empty string:

- **at definition time** (:func:`check`): the template is parsed, and every name it uses must be
  known (:data:`BUILTIN_NAMES`, names later features register with :func:`register_name`),
  ``params.x`` must be a declared parameter, ``task.x`` an attribute of the task; ``var`` is
  refused with the reason (variables are not configured);
- **at trigger time** (:func:`check_rendering`): each template of the pipeline renders with the
  run's parameters and a stand-in date, which catches what only values show (``params.cfg.key``);
- **at run time** (:func:`render`): in the worker, with the run's dates, parameters and task.

**Shell commands** (``shell=True``): every ``{{ ... }}`` is escaped for the shell quoting it
stands in, read from the command's own text: outside quotes it becomes one argument
(``shlex.quote``), inside ``"..."`` its ``$``, backquote, ``"`` and ``\\`` are escaped, inside
``'...'`` its quotes are. So a parameter ``"; rm -rf ~"`` stays one inert argument. ``| raw``
opts out: the value is pasted as shell code (for a parameter that *is* a command line, from a
trusted source only).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from nbflow.exceptions import DefinitionError
from nbflow.vault import template_namespace

__all__ = [
    "BUILTIN_NAMES",
    "TemplateError",
    "check",
    "check_rendering",
    "check_value",
    "env_vars",
    "is_template",
    "register_name",
    "render",
    "render_value",
    "run_values",
    "templates_of",
]

#: The names every template knows, with what they hold (Airflow's names and meanings).
BUILTIN_NAMES: dict[str, str] = {
    "ds": "the logical date as YYYY-MM-DD",
    "ds_nodash": "the logical date as YYYYMMDD",
    "ts": "the logical date as ISO 8601 (2026-01-01T00:00:00+00:00)",
    "ts_nodash": "the logical date as 20260101T000000",
    "ts_nodash_with_tz": "the logical date as 20260101T000000+0000",
    "logical_date": "the logical date (a datetime)",
    "data_interval_start": "the start of the run's data interval (a datetime)",
    "data_interval_end": "the end of the run's data interval (a datetime)",
    "run_id": "the run's id",
    "task": "the task: task.name (its id), task.pipeline",
    "params": "the run's parameters: params.NAME",
}
_TASK_ATTRIBUTES = ("name", "task_id", "pipeline")

#: Names features add to every template (name -> its value from the run's values); see
#: :func:`register_name`. ``conn.NAME.host``, ``var.KEY``: connections and variables (nbflow.vault).
_EXTRA: dict[str, Callable[[Mapping[str, Any]], Any]] = {k: template_namespace(k) for k in ("conn", "var")}
#: Names reserved for a feature this installation does not have: name -> why it is refused.
_UNAVAILABLE: dict[str, str] = {}


def register_name(name: str, value: Callable[[Mapping[str, Any]], Any]) -> None:
    """Add ``name`` to every template's context: ``value(run_values)`` gives its value when a
    template renders (``run_values`` as :func:`run_values` builds them). How a later feature
    (connections and variables: ``var``) plugs in."""
    _EXTRA[name] = value
    _UNAVAILABLE.pop(name, None)


def known_names() -> list[str]:
    """Every name a template may use."""
    return [*BUILTIN_NAMES, *_EXTRA]


class TemplateError(DefinitionError):
    """A template of a task field is wrong: bad syntax, or a name nothing defines."""


def is_template(value: Any) -> bool:
    """Whether ``value`` is a string holding Jinja markup."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


# --- the environment ---------------------------------------------------------------------------


class Raw(str):
    """A value the ``raw`` filter marked: pasted into a shell command as it is."""


def _date(value: Any, fmt: str) -> str:
    if not isinstance(value, datetime):
        raise TemplateError(
            f"a date filter was given {value!r}, not a date", hint="use it on a date: logical_date | ds"
        )
    return value.strftime(fmt)


def _quote_none(value: Any) -> str:
    return value if isinstance(value, Raw) else shlex.quote(str(value))


def _quote_double(value: Any) -> str:
    if isinstance(value, Raw):
        return value
    text = str(value)
    for char in ("\\", "$", "`", '"'):
        text = text.replace(char, "\\" + char)
    return text


def _quote_single(value: Any) -> str:
    return value if isinstance(value, Raw) else str(value).replace("'", "'\\''")


@functools.cache
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters.update(
        ds=lambda v: _date(v, "%Y-%m-%d"),
        ds_nodash=lambda v: _date(v, "%Y%m%d"),
        ts=lambda v: v.isoformat() if isinstance(v, datetime) else _date(v, ""),
        ts_nodash=lambda v: _date(v, "%Y%m%dT%H%M%S"),
        ts_nodash_with_tz=lambda v: _date(v, "%Y%m%dT%H%M%S%z"),
        raw=Raw,
        sqlsafe=str,  # a SQL task's value pasted as SQL (nbflow.tasks.sqlrender); elsewhere as it is
        _nbflow_sh_none=_quote_none,
        _nbflow_sh_double=_quote_double,
        _nbflow_sh_single=_quote_single,
    )
    return env


def _shell_source(text: str) -> str:
    """``text`` with each ``{{ expr }}`` wrapped in the escaping filter of the shell quoting it
    stands in (read from the literal text around it: unquoted, '...' or "...")."""
    state = "none"
    out: list[str] = []
    escaped = False
    for _line, token, value in _environment().lexer.tokeniter(text, None):
        if token == "data":
            for char in value:
                if escaped:
                    escaped = False
                elif char == "\\" and state != "single":
                    escaped = True
                elif char == "'" and state != "double":
                    state = "none" if state == "single" else "single"
                elif char == '"' and state != "single":
                    state = "none" if state == "double" else "double"
            out.append(value)
        elif token == "variable_begin":
            out.append(value + "(")
        elif token == "variable_end":
            out.append(f")|_nbflow_sh_{state} " + value)
        else:
            out.append(value)
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _tree(text: str) -> Any:
    """The parsed template (read only; parsed once per text)."""
    return _environment().parse(text)


@functools.lru_cache(maxsize=1024)
def _compiled(text: str, shell: bool) -> Any:
    env = _environment()
    return env.from_string(_shell_source(text) if shell else text)


# --- checking ----------------------------------------------------------------------------------


def _names_hint(params: Iterable[str]) -> str:
    declared = ", ".join(f"params.{p}" for p in params) or "(no parameters declared)"
    return f"known names: {', '.join(known_names())}; parameters: {declared}"


def check(text: str, *, task: str, field: str, params: Iterable[str], where: str | None = None) -> None:
    """Refuse a template that cannot render: bad syntax, an unknown name, an undeclared
    ``params.x``, ``task.x`` that is no attribute, an unavailable name (``var``)."""
    from jinja2 import TemplateSyntaxError, meta, nodes

    declared = list(params)
    label = f"template {text!r} in {field} of task '{task}'"
    try:
        tree = _environment().parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"{label} is not valid Jinja2: {exc.message} (line {exc.lineno})",
            where=where,
            hint="write {{ name }} for a value, {% if ... %}...{% endif %} for logic; escape a literal {{ as {{ '{{' }}",
        ) from None
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name in _UNAVAILABLE:
            raise TemplateError(f"{label} uses '{name}': {_UNAVAILABLE[name]}", where=where, hint=_names_hint(declared))
        if name not in BUILTIN_NAMES and name not in _EXTRA:
            raise TemplateError(f"{label} uses unknown name '{name}'", where=where, hint=_names_hint(declared))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node.node, nodes.Name) or node.node.ctx != "load":
            continue
        if isinstance(node, nodes.Getattr):
            attr: Any = node.attr
        elif isinstance(node.arg, nodes.Const):
            attr = node.arg.value
        else:
            continue  # params[some_expression]: only values can tell
        if node.node.name == "params" and attr not in declared:
            raise TemplateError(
                f"{label} uses params.{attr}, which the pipeline does not declare",
                where=where,
                hint=_names_hint(declared),
            )
        if node.node.name == "task" and attr not in _TASK_ATTRIBUTES:
            raise TemplateError(
                f"{label} uses task.{attr}; a task has {', '.join(_TASK_ATTRIBUTES)}",
                where=where,
                hint=_names_hint(declared),
            )


#: The run value (of a task's run context) each name stands for, for incremental fingerprints.
_CONTEXT_OF = {
    **dict.fromkeys(("ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz", "logical_date"), "logical_date"),
    "data_interval_start": "data_interval_start",
    "data_interval_end": "data_interval_end",
    "run_id": "run_id",
}


def inputs_of(templates: Iterable[str]) -> tuple[set[str], set[str]]:
    """``(parameters, run values)`` the templates read: what makes their rendering differ between
    runs, for incremental fingerprints. ``params`` used other than as ``params.x`` (a loop over
    it, ``params[name]``) counts as every parameter: ``{"*"}``."""
    from jinja2 import meta, nodes

    params: set[str] = set()
    context: set[str] = set()
    for text in templates:
        tree = _tree(text)
        context.update(_CONTEXT_OF[n] for n in meta.find_undeclared_variables(tree) if n in _CONTEXT_OF)
        attrs = [
            n.attr for n in tree.find_all(nodes.Getattr) if isinstance(n.node, nodes.Name) and n.node.name == "params"
        ]
        params.update(attrs)
        if sum(1 for n in tree.find_all(nodes.Name) if n.name == "params") > len(attrs):
            params.add("*")
    return params, context


def check_value(
    value: Any, *, task: str, field: str, params: Iterable[str], where: str | None = None
) -> dict[str, str]:
    """:func:`check` every template inside ``value`` (a string, or lists and dict values of them);
    returns them as ``{field label: template}`` (``parameters.run_date``, ``args[0]``)."""
    found = dict(_templates(value, field))
    names = list(params)
    for label, text in found.items():
        check(text, task=task, field=label, params=names, where=where)
    return found


def _templates(value: Any, label: str) -> Iterable[tuple[str, str]]:
    if is_template(value):
        yield label, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _templates(item, f"{label}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _templates(item, f"{label}.{key}")


# --- rendering ---------------------------------------------------------------------------------


class _Params:
    """The run's parameters, ``params.x`` or ``params["x"]`` (no dict: no method hides ``params.items``)."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values


class _Task:
    def __init__(self, task_id: str, pipeline: str):
        self.name = self.task_id = task_id
        self.pipeline = pipeline

    def __str__(self) -> str:
        return self.name


class _Date(datetime):
    """A datetime that renders as ISO 8601 (as Airflow's dates do), not ``str(datetime)``."""

    def __str__(self) -> str:
        return self.isoformat()


def _as_date(value: Any) -> Any:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:  # the store keeps UTC
        value = value.replace(tzinfo=UTC)
    return _Date.fromisoformat(value.isoformat())


def run_values(
    params: Mapping[str, Any], run_context: Mapping[str, Any], *, task_id: str, pipeline: str
) -> dict[str, Any]:
    """The context templates render with: the run's dates, id, parameters and the task."""
    logical = _as_date(run_context.get("logical_date"))
    values: dict[str, Any] = {
        "logical_date": logical,
        "data_interval_start": _as_date(run_context.get("data_interval_start")),
        "data_interval_end": _as_date(run_context.get("data_interval_end")),
        "run_id": run_context.get("run_id"),
        "task": _Task(task_id, pipeline),
        "params": _Params(params),
    }
    if isinstance(logical, datetime):
        values.update(
            ds=logical.strftime("%Y-%m-%d"),
            ds_nodash=logical.strftime("%Y%m%d"),
            ts=logical.isoformat(),
            ts_nodash=logical.strftime("%Y%m%dT%H%M%S"),
            ts_nodash_with_tz=logical.strftime("%Y%m%dT%H%M%S%z"),
        )
    else:  # a dry run's stand-in ("<the new run>"): said as it is
        values.update(dict.fromkeys(("ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz"), logical))
    for name, value in _EXTRA.items():
        values[name] = value(values)
    return values


def render(text: str, values: Mapping[str, Any], *, task: str, field: str, shell: bool = False) -> str:
    """``text`` rendered with ``values`` (see :func:`run_values`); a :class:`TemplateError`
    naming the task, the field and the known names when a name has no value."""
    if not is_template(text):
        return text
    from jinja2 import TemplateError as JinjaError
    from jinja2 import UndefinedError

    try:
        return str(_compiled(text, shell).render(values))
    except UndefinedError as exc:
        params = values.get("params") or {}
        raise TemplateError(
            f"template {text!r} in {field} of task '{task}' cannot render: {exc.message}",
            hint=getattr(exc, "hint", None) or _names_hint(params),  # a secret's own fix (vault), else the names
        ) from None
    except JinjaError as exc:  # a syntax error, or the sandbox refusing an unsafe operation
        raise TemplateError(f"template {text!r} in {field} of task '{task}' cannot render: {exc}") from None


def render_value(value: Any, values: Mapping[str, Any], *, task: str, field: str) -> Any:
    """``value`` with every template inside it (strings, lists, dict values) rendered."""
    if is_template(value):
        return render(value, values, task=task, field=field)
    if isinstance(value, (list, tuple)):
        return type(value)(render_value(v, values, task=task, field=f"{field}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return {k: render_value(v, values, task=task, field=f"{field}.{k}") for k, v in value.items()}
    return value


def env_vars(run_context: Mapping[str, Any]) -> dict[str, str]:
    """The scheduling values every shell command's environment has: ``NBFLOW_LOGICAL_DATE``
    (ISO 8601), ``NBFLOW_DS`` (YYYY-MM-DD), ``NBFLOW_DATA_INTERVAL_START`` and ``_END``."""
    env: dict[str, str] = {}
    names = {
        "logical_date": "NBFLOW_LOGICAL_DATE",
        "data_interval_start": "NBFLOW_DATA_INTERVAL_START",
        "data_interval_end": "NBFLOW_DATA_INTERVAL_END",
    }
    for key, var in names.items():
        value = _as_date(run_context.get(key))
        if value is not None:
            env[var] = str(value)
    if "NBFLOW_LOGICAL_DATE" in env:
        env["NBFLOW_DS"] = env["NBFLOW_LOGICAL_DATE"][:10]
    return env


# --- the templates of a pipeline, checked when a run is made --------------------------------------


def templates_of(tasks: Iterable[Any]) -> dict[str, dict[str, list[Any]]]:
    """``{task_id: {field: [template, shell?]}}`` of the tasks that have templates (each task
    kind keeps its own in ``templates``); stored in a pipeline version's definition."""
    return {
        t.task_id: {field: [text, shell] for field, (text, shell) in t.templates.items()}
        for t in tasks
        if getattr(t, "templates", None)
    }


def check_rendering(
    templates: Mapping[str, Mapping[str, Any]] | None, params: Mapping[str, Any], *, pipeline: str
) -> None:
    """Render every template of a pipeline (:func:`templates_of`) with the run's parameters and
    a stand-in date: a :class:`TemplateError` before the run is made when one cannot render."""
    if not templates:
        return
    now = datetime.now(UTC)
    context = {"run_id": 0, "logical_date": now, "data_interval_start": now, "data_interval_end": now}
    for task_id, fields in templates.items():
        values = run_values(params, context, task_id=task_id, pipeline=pipeline)
        for field, (text, shell) in fields.items():
            try:
                render(text, values, task=task_id, field=field, shell=shell)
            except TemplateError as exc:
                exc.where = f"pipeline '{pipeline}'"
                raise
