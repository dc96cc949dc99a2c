"""Typed, described run parameters: ``Param(1.0, type="number", minimum=0, description=...)``.

A pipeline's ``params={...}`` may give a :class:`Param` instead of a plain default. Its keyword
arguments are JSON Schema keywords (``type``, ``minimum``, ``maximum``, ``enum``, ``pattern``,
``items``, ``title``, ``description`` ...), as in Airflow's ``Param``. The schema is checked
when the pipeline is defined (a schema ``jsonschema`` rejects, or a default that does not fit
it, is a :class:`~nbflow.exceptions.DefinitionError`), stored with the pipeline's version,
and every run's value is validated against it with ``jsonschema`` wherever a run is made
(:func:`nbflow.params.resolve_run_params`: the CLI's ``-p`` and ``--sweep``, REST, magics,
the scheduler). A default of ``None`` that the schema refuses makes the parameter required.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from nbflow.exceptions import DefinitionError
from nbflow.templating import templates_of

__all__ = ["Param", "run_checks", "schema_problem", "split_params"]


class Param:
    """A run parameter with a default and a JSON Schema (``type``, ``enum``, ``minimum``, ``title``,
    ``description`` ...); see the module docstring."""

    def __init__(self, default: Any = None, description: str | None = None, **schema: Any):
        self.default = default
        self.schema: dict[str, Any] = dict(schema)
        if description is not None:
            self.schema["description"] = description

    @property
    def description(self) -> str | None:
        """The parameter's description (shown under its input in JupyterLab's trigger form)."""
        return self.schema.get("description")

    def __repr__(self) -> str:
        return f"Param({self.default!r}, {', '.join(f'{k}={v!r}' for k, v in self.schema.items())})"


def _validator(schema: Mapping[str, Any]) -> Any:
    from jsonschema import FormatChecker
    from jsonschema.validators import validator_for

    return validator_for(schema)(schema, format_checker=FormatChecker())


def schema_problem(name: str, value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why ``value`` does not fit the parameter's JSON Schema (naming the parameter, the value and
    the schema keyword that refused it), or None when it fits."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(schema).iter_errors(_jsonish(value)))
    if error is None:
        return None
    path = "".join(f"[{p!r}]" for p in error.absolute_path)
    return f"parameter '{name}{path}' is not valid: {error.message} (schema keyword '{error.validator}')"


def _jsonish(value: Any) -> Any:
    """Tuples as lists: JSON Schema's ``array`` is a list."""
    if isinstance(value, tuple):
        return [_jsonish(v) for v in value]
    if isinstance(value, list):
        return [_jsonish(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonish(v) for k, v in value.items()}
    return value


def split_params(
    params: Mapping[str, Any], *, pipeline: str, where: str | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(defaults, schemas)`` of a pipeline's ``params=``: each :class:`Param`'s schema checked
    (a valid JSON Schema whose default fits it, unless the default is None: a required value)."""
    defaults: dict[str, Any] = {}
    schemas: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        if not isinstance(value, Param):
            defaults[name] = value
            continue
        # only now: importing jsonschema costs seconds (its format checkers), a pipeline without Param never pays it
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        defaults[name] = value.default
        try:
            json.dumps(value.schema)
            validator_for(value.schema).check_schema(value.schema)
        except (TypeError, ValueError, SchemaError) as exc:
            reason = exc.message if isinstance(exc, SchemaError) else str(exc)
            raise DefinitionError(
                f"Param '{name}' of pipeline '{pipeline}' has an invalid JSON Schema: {reason}",
                where=where,
                hint='use JSON Schema keywords with JSON values: Param(1.0, type="number", minimum=0), '
                'Param("eu", enum=["eu", "us"])',
            ) from None
        problem = None if value.default is None else schema_problem(name, value.default, value.schema)
        if problem:
            raise DefinitionError(
                f"the default of Param '{name}' of pipeline '{pipeline}' does not fit its schema: {problem}",
                where=where,
                hint="change the default or the schema (a default of None makes the parameter required)",
            )
        schemas[name] = value.schema
    return defaults, schemas


def run_checks(schemas: Mapping[str, Any], tasks: Iterable[Any]) -> dict[str, Any]:
    """What a pipeline version's definition keeps to check each new run before it is made (see
    :func:`nbflow.params.resolve_for`): ``param_schemas`` and the tasks' ``templates``, each
    only when there are some (so the definitions of pipelines without them read as before)."""
    checks: dict[str, Any] = {}
    if schemas:
        checks["param_schemas"] = dict(schemas)
    templates = templates_of(tasks)
    if templates:
        checks["templates"] = templates
    return checks
