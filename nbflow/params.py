"""The notebook parameter contract.

A notebook task declares its parameters in the cell tagged ``parameters`` (papermill's
convention). nbflow checks what a pipeline passes against that cell *before* any kernel is
started, and fails with a :class:`~nbflow.exceptions.ParameterError` that names the notebook,
the task and the parameter, where papermill itself would only log a warning:

- parameters given, but no ``parameters`` cell (strict mode);
- a given name the cell does not declare (with a "did you mean" hint);
- a literal value whose type does not fit the declared or inferred type.

Declarations are read with ``papermill.inspect_notebook``. papermill takes a type only from an
annotation (``n: int = 5``) or a ``# type:`` comment, so for ``n = 5`` nbflow infers the type
from the literal default itself. Results are cached per (path, mtime, size).

Run-level helpers (``coerce_value``, ``resolve_run_params``) turn CLI strings such as
``-p alpha=0.2`` into values of the declared default's type.
"""

from __future__ import annotations

import ast
import difflib
import json
import shlex
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # nbformat costs ~1 s to import (jsonschema formats): only when a notebook is read
    import nbformat

from nbflow.exceptions import DefinitionError, NotebookNotFoundError, ParameterError
from nbflow.paramvalues import _kind, check_run_value, coerce_value, value_type
from nbflow.templating import check_rendering
from nbflow.typedparams import schema_problem

__all__ = [
    "ParamSpec",
    "value_type",
    "inspect_parameters",
    "has_parameters_cell",
    "check_notebook_parameters",
    "check_kernel",
    "check_run_value",
    "coerce_value",
    "resolve_run_params",
    "resolve_for",
]

PARAMETERS_TAG = "parameters"
_KNOWN_TYPES = {"int", "float", "str", "bool", "list", "dict"}
# Annotation spellings that mean one of the known types.
_TYPE_ALIASES = {
    "integer": "int",
    "string": "str",
    "boolean": "bool",
    "tuple": "list",
    "set": "list",
    "sequence": "list",
    "mapping": "dict",
}
_TAGS_HOW = "in JupyterLab: Property Inspector (gear icon) -> Cell Tags -> add 'parameters'"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter declared in a notebook's ``parameters`` cell."""

    name: str
    type_name: str | None  # "int", "float", "str", "bool", "list", "dict", or None if unknown
    default: str  # source text of the default value, e.g. "0.5" or '"world"'
    help: str = ""


# --------------------------------------------------------------------------- reading


def _read_notebook(path: Path) -> nbformat.NotebookNode:
    if not path.is_file():
        raise NotebookNotFoundError(
            f"notebook {path} does not exist",
            hint="check the path (relative paths are resolved against the pipeline file's folder)",
        )
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    for cell in nb.cells:
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def _normalize_type(annotation: str | None) -> str | None:
    """Map an annotation such as ``int``, ``List[int]`` or ``Optional[float]`` to a known name."""
    if not annotation or annotation == "None":
        return None
    text = annotation.strip().strip("'\"")
    if text.startswith(("Optional[", "optional[")) and text.endswith("]"):
        text = text[len("Optional[") : -1]
    base = text.split("[", 1)[0].strip().lower()
    base = _TYPE_ALIASES.get(base, base)
    return base if base in _KNOWN_TYPES else None


def _literal_type(default_src: str) -> str | None:
    """The type name of a literal default (``5`` -> ``int``), or None when not a literal."""
    try:
        value = ast.literal_eval(default_src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if value is None:
        return None
    return _normalize_type(type(value).__name__)


def _ast_declarations(source: str) -> dict[str, tuple[str | None, str]]:
    """Top-level names assigned in a Python parameters cell: name -> (annotation, default src).

    Used to catch declarations papermill's line regex skips (e.g. ``x: pd.Timestamp = ...``
    or ``a, b = 1, 2``), so such names are not reported as unknown.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found: dict[str, tuple[str | None, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = ast.get_source_segment(source, node.value) if node.value else ""
            found[node.target.id] = (ast.unparse(node.annotation), default or "")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = (None, ast.get_source_segment(source, node.value) or "")
                elif isinstance(target, (ast.Tuple, ast.List)):
                    # a, b = 1, 2: pair names with values when the shapes match
                    values = getattr(node.value, "elts", None)
                    if values is None or len(values) != len(target.elts):
                        values = [None] * len(target.elts)
                    for name, value in zip(target.elts, values):
                        if isinstance(name, ast.Name):
                            src = ast.get_source_segment(source, value) if value else ""
                            found[name.id] = (None, src or "")
    return found


def _declared_type(annotation: str | None, default_src: str) -> str | None:
    """The annotation's type when there is one (None if nbflow cannot check it), else the
    literal default's type."""
    if annotation and annotation != "None":
        return _normalize_type(annotation)
    return _literal_type(default_src)


def _is_python(nb: nbformat.NotebookNode) -> bool:
    lang = nb.metadata.get("language_info", {}).get("name") or nb.metadata.get("kernelspec", {}).get("language")
    return lang in (None, "python")


def _inspect_uncached(path: Path) -> dict[str, ParamSpec]:
    nb = _read_notebook(path)
    cell = _parameters_cell(nb)
    if cell is None:
        return {}
    raw: dict[str, dict[str, Any]]
    try:
        import papermill

        # papermill formats the path with str.format (path templating); escape braces so a
        # literal "{" in a folder name is not taken for a template field.
        escaped = str(path).replace("{", "{{").replace("}", "}}")
        raw = papermill.inspect_notebook(escaped)
    except ValueError:
        # papermill needs a kernelspec/language to pick a translator; without one we read the
        # cell as Python (check_kernel reports the missing kernelspec separately).
        from papermill.translators import PythonTranslator

        raw = {p.name: p._asdict() for p in PythonTranslator.inspect(cell)}
    specs: dict[str, ParamSpec] = {}
    for name, info in raw.items():
        default = str(info.get("default", ""))
        type_name = _declared_type(info.get("inferred_type_name"), default)
        specs[name] = ParamSpec(name, type_name, default, str(info.get("help") or ""))
    if _is_python(nb):
        for name, (annotation, default) in _ast_declarations(cell.source).items():
            if name not in specs:
                type_name = _declared_type(annotation, default)
                specs[name] = ParamSpec(name, type_name, default, "")
    return specs


_cache: dict[tuple[str, int, int], dict[str, ParamSpec]] = {}
_cache_lock = threading.Lock()


def inspect_parameters(path: str | Path) -> dict[str, ParamSpec]:
    """The parameters declared in the notebook's ``parameters`` cell ({} when there is none)."""
    resolved = Path(path).expanduser().resolve()
    try:
        st = resolved.stat()
    except OSError:
        _read_notebook(resolved)  # raises NotebookNotFoundError with a hint
        raise
    key = (str(resolved), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is None:
        cached = _inspect_uncached(resolved)
        with _cache_lock:
            # Drop stale entries of the same file so the cache does not grow with every edit.
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = cached
    return dict(cached)


def has_parameters_cell(path: str | Path) -> bool:
    """Whether the notebook has a cell tagged ``parameters``."""
    return _parameters_cell(_read_notebook(Path(path).expanduser())) is not None


# --------------------------------------------------------------------------- checking


def _type_ok(value: Any, type_name: str) -> bool:
    if value is None:
        return True
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "list":
        return isinstance(value, (list, tuple))
    if type_name == "dict":
        return isinstance(value, Mapping)
    return True  # unknown type: nothing to check


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_notebook_parameters(
    path: str | Path,
    given: Mapping[str, Any],
    *,
    task_id: str,
    pipeline: str,
    deferred: Iterable[str] = (),
    params_cell: str = "strict",
) -> None:
    """Check ``given`` against the notebook's ``parameters`` cell; raise ParameterError if unfit.

    ``deferred`` names values that are only known at run time (upstream results, templates):
    they must be declared but their type is not checked. ``params_cell="inject_top"`` accepts a
    notebook without a ``parameters`` cell and checks nothing, like papermill.
    """
    if params_cell not in ("strict", "inject_top"):
        raise ValueError(f"params_cell must be 'strict' or 'inject_top', not {params_cell!r}")
    where = f"pipeline '{pipeline}'"
    nb_name = str(path)
    if not has_parameters_cell(path):
        if given and params_cell == "strict":
            raise ParameterError(
                f"task '{task_id}' passes parameters {', '.join(sorted(given))} but notebook "
                f"{nb_name} has no cell tagged 'parameters'; add a cell tagged 'parameters' "
                "that declares them",
                where=where,
                hint=f'{_TAGS_HOW}; or pass params_cell="inject_top" to inject them at the top '
                "of the notebook with nothing checked (papermill's behaviour, which only warns)",
                unknown=sorted(given),
            )
        return
    if params_cell == "inject_top":
        return
    declared = inspect_parameters(path)
    unknown = sorted(name for name in given if name not in declared)
    if unknown:
        fixes = "; ".join(
            f"'{name}'{_did_you_mean(name, declared)}: declare it in the parameters cell of "
            f"{nb_name} or remove it from the task"
            for name in unknown
        )
        raise ParameterError(
            f"task '{task_id}' passes parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)} that notebook {nb_name} does not declare; "
            f"declared: {', '.join(sorted(declared)) or '(none)'}",
            where=where,
            hint=fixes,
            unknown=unknown,
        )
    skip = set(deferred)
    problems = []
    for name, value in given.items():
        spec = declared[name]
        if name in skip or spec.type_name is None:
            continue
        if not _type_ok(value, spec.type_name):
            problems.append(
                f"parameter '{name}' expects {spec.type_name} (default {spec.default}), "
                f"got {type(value).__name__} {value!r}"
            )
    if problems:
        raise ParameterError(
            f"task '{task_id}' passes notebook {nb_name} a value of the wrong type: " + "; ".join(problems),
            where=where,
            hint="pass a value of the declared type, or change the annotation/default in the parameters cell",
        )


_available_kernels: set[str] | None = None
_kernels_lock = threading.Lock()


def _kernel_names(refresh: bool = False) -> set[str]:
    global _available_kernels
    with _kernels_lock:
        if _available_kernels is None or refresh:
            from jupyter_client.kernelspec import KernelSpecManager

            _available_kernels = {n.lower() for n in KernelSpecManager().find_kernel_specs()}
        return set(_available_kernels)


def kernel_alias(name: str) -> str:
    """A kernel name as jupyter_client resolves it (so papermill runs it): ``python`` is the native
    Python kernel, ``python3`` (``KernelManager``'s alias)."""
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    return NATIVE_KERNEL_NAME if name.lower() == "python" else name


def check_kernel(path: str | Path, kernel_name: str | None = None) -> str:
    """The kernel the notebook will run with; DefinitionError if it has none or it is unknown.

    ``kernel_name`` (a task's override) is checked instead of the notebook's kernelspec.
    """
    nb = _read_notebook(Path(path).expanduser())
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name")
    if not name:
        raise DefinitionError(
            f"notebook {path} has no kernelspec",
            where=str(path),
            hint="open it in JupyterLab and pick a kernel (Kernel -> Change Kernel), then save; "
            "or pass kernel_name=... to the task",
        )
    name = kernel_alias(name)
    # Kernel lists are cached per process; refresh once on a miss in case one was just installed.
    if name.lower() not in _kernel_names() and name.lower() not in _kernel_names(refresh=True):
        available = ", ".join(sorted(_kernel_names())) or "(none)"
        raise DefinitionError(
            f"kernel '{name}' of notebook {path} not found; available: {available}",
            where=str(path),
            hint="install the kernel (python -m ipykernel install --user --name NAME) or pass "
            "kernel_name= one of the available kernels",
        )
    return name


# --------------------------------------------------------------------------- run parameters


def resolve_run_params(
    declared: Mapping[str, Any],
    given: Mapping[str, Any],
    *,
    pipeline: str,
    max_bytes: int | None = None,
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """Pipeline defaults overlaid with ``given``, each value checked against its default.

    Strings (from the command line) are coerced to the default's type; other values must be
    of that type already (see :func:`check_run_value`). A parameter with a JSON Schema
    (``schemas``, from :class:`~nbflow.typedparams.Param`) is then validated against it, its
    default too. Every bad value is reported at once, in one :class:`ParameterError` whose
    ``invalid`` names them.
    """
    unknown = sorted(name for name in given if name not in declared)
    if unknown:
        hints = "; ".join(f"'{n}'{_did_you_mean(n, declared)}" for n in unknown)
        raise ParameterError(
            f"pipeline '{pipeline}' has no parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)}; declared: "
            f"{', '.join(sorted(declared)) or '(none)'}",
            where=f"pipeline '{pipeline}'",
            hint=f"{hints}: declare it in the pipeline's params= or drop it",
            unknown=unknown,
        )
    if max_bytes is None:
        from nbflow.config import get_settings

        max_bytes = get_settings().max_param_bytes
    resolved = dict(declared)
    problems: dict[str, str] = {}
    for name, value in given.items():
        try:
            resolved[name] = check_run_value(name, value, declared[name], max_bytes=max_bytes)
        except ValueError as exc:
            problems[name] = str(exc)
    by_schema = {}
    for name, schema in (schemas or {}).items():
        problem = None if name in problems else schema_problem(name, resolved.get(name), schema)
        if problem:
            by_schema[name] = schema
            problems[name] = problem if name in given else f"{problem}; no value was given and the default does not fit"
    if problems:
        first = next(iter(problems))
        if first in by_schema:
            raise ParameterError(
                "; ".join(problems.values()),
                where=f"pipeline '{pipeline}'",
                hint=f"pass {first}= a value its schema accepts: {json.dumps(_rules(by_schema[first]), default=str)}",
                invalid=list(problems),
            )
        raise ParameterError(
            "; ".join(problems.values()),
            where=f"pipeline '{pipeline}'",
            hint=_value_hint(first, declared[first]),
            invalid=list(problems),
        )
    return resolved


def _value_hint(name: str, default: Any) -> str:
    """How to pass a good value of a parameter; a list or dict as the command line takes it
    (JSON, quoted for the shell: ``-p 'items=[1, 2]'``; an unquoted ``[1, 2]`` is two arguments)."""
    if default is None:
        return f"pass {name}= a JSON value (string, number, true/false, null, list or object)"
    example = json.dumps(default, default=str)
    if isinstance(default, (list, tuple, dict)):
        return f"pass {name}= a JSON {value_type(default)} like {example}; on the command line: -p {shlex.quote(f'{name}={example}')}"
    return f"pass {name}= {_kind(default)} like {example}"


def _rules(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Schema without the words that describe it (title, description): what it accepts."""
    return {k: v for k, v in schema.items() if k not in ("title", "description")}


def resolve_for(source: Any, given: Mapping[str, Any], *, max_bytes: int | None = None) -> dict:
    """:func:`resolve_run_params` for a pipeline (a ``Pipeline``, or the definition its version
    stored): its defaults and JSON Schemas, then every template of its tasks rendered with the
    run's values (:func:`nbflow.templating.check_rendering`), so a run that could not render
    one is refused before it exists."""
    if isinstance(source, Mapping):
        name, defaults = source["name"], source.get("params") or {}
        schemas, templates = source.get("param_schemas"), source.get("templates")
    else:
        from nbflow.templating import templates_of

        name, defaults, schemas = source.name, source.param_defaults, source.param_schemas
        templates = templates_of(source.tasks.values())
    resolved = resolve_run_params(defaults, given, pipeline=name, max_bytes=max_bytes, schemas=schemas)
    check_rendering(templates, resolved, pipeline=name)
    return resolved
