"""How notebook cells become a pipeline of cell tasks (the file form and the kernel form).

A cell is declared by its first line or by its tags (JupyterLab: Property Inspector -> Cell Tags):

| first line                                     | tags                                  | role  |
|------------------------------------------------|---------------------------------------|-------|
| ``%%nbflow task NAME --after A,B --inputs x``  | ``nbflow:task=NAME``, ``nbflow:after=A``, ``nbflow:inputs=x`` ... | task |
| ``%%nbflow setup``                             | ``nbflow:setup``                      | setup |
| ``%%nbflow params``                            | ``parameters`` (papermill's)          | setup whose literal assignments are the pipeline's parameters |

A tag may not contain a comma (nbformat's schema), so list names by repeating the tag
(``nbflow:after=A``, ``nbflow:after=B``); options given twice add up.

Untagged code cells above the first task cell are setup cells too; other cells below it are
ignored. In setup cells, ``%nbflow ...`` and ``%load_ext nbflow`` lines are dropped (a task
kernel must not start runs). ``%nbflow pipeline NAME [--schedule CRON] [--kernel K]`` names the
pipeline (else the tag ``nbflow:pipeline=NAME``, the notebook metadata ``nbflow.pipeline``, the
file's stem).

An ``--inputs`` name is looked up among the ``--outputs`` of the ``--after`` tasks, else of the
nearest task cell above; a name nobody outputs is an error naming the cell. Errors read
``file.ipynb:cell N: message`` (N counts every cell from 0, as in output notebooks).
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbflow.dag import Pipeline
from nbflow.exceptions import DefinitionError, NbflowError, PipelineLoadError
from nbflow.tasks.base import cell_name
from nbflow.tasks.cell import CellTask, SetupCell

_CELL_MAGIC = re.compile(r"^\s*%%nbflow\b[ \t]*(.*)$")
_DROP_LINE = re.compile(r"^\s*%(nbflow\b|(re)?load_ext\s+nbflow\b)")
_PIPELINE_LINE = re.compile(r"^\s*%nbflow\s+pipeline\b(.*)$")
TAG_PREFIX = "nbflow:"


class ArgumentError(Exception):
    """A bad option in a ``%nbflow`` line (argparse would exit the kernel; this is raised instead)."""


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`ArgumentError` instead of exiting (kernels must not exit)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(f"{message}\n  usage: {self.format_usage().strip().removeprefix('usage: ')}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise ArgumentError(message or "")  # -h printed the help already


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


TASK_USAGE = (
    "%%nbflow task NAME [--after A,B] [--inputs x,y] [--outputs a,b] [--retries N] [--retry-delay S]\n"
    "                       [--timeout S] [--cell-timeout S] [--queue Q] [--trigger-rule RULE]\n"
    "                       [--reads PATH,GLOB] [--cache true|false] [--cache-ttl S] [--produces ASSET,...]"
)


def task_parser() -> Parser:
    """Options of a task cell (``%%nbflow task ...``; tags ``nbflow:KEY=VALUE`` map onto them)."""
    p = Parser(
        prog="%%nbflow task",
        usage=TASK_USAGE.replace("%", "%%"),
        add_help=False,
        description="Declare this cell as a task.",
    )
    p.add_argument("name", help="task name")
    p.add_argument("--after", type=_names, action="extend", default=[], help="run after these tasks (comma-separated)")
    p.add_argument(
        "--inputs", type=_names, action="extend", default=[], help="variables loaded from upstream --outputs"
    )
    p.add_argument(
        "--outputs", type=_names, action="extend", default=[], help="variables saved as artifacts for later cells"
    )
    p.add_argument("--retries", type=int, help="extra tries after a failure")
    p.add_argument("--retry-delay", type=float, help="seconds between tries")
    p.add_argument("--timeout", type=float, help="seconds for the whole task (its kernel is killed)")
    p.add_argument("--cell-timeout", type=float, help="seconds for each cell")
    p.add_argument("--queue", help="worker queue")
    p.add_argument("--trigger-rule", help="all_success (default), all_done, one_failed ...")
    p.add_argument(
        "--reads", type=_names, action="extend", default=[], help="files it reads (incremental runs hash them)"
    )
    p.add_argument("--cache", type=_bool, help="false: never reused by an incremental run (side effects)")
    p.add_argument("--cache-ttl", type=float, help="seconds: an incremental run reuses only a younger success")
    p.add_argument("--produces", type=_names, action="extend", default=[], help="assets each success updates")
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def pipeline_parser() -> Parser:
    """Options of ``%nbflow pipeline NAME ...``."""
    p = Parser(prog="%nbflow pipeline", add_help=False, description="Name this notebook's pipeline.")
    p.add_argument("name", help="pipeline name (default: the notebook's file name)")
    p.add_argument("--schedule", help="cron expression for the scheduler, e.g. '0 3 * * *'")
    p.add_argument("--kernel", help="kernel of the cell tasks (default: the notebook's, else python3)")
    p.add_argument("--description", default="", help="one line about the pipeline")
    return p


def parse(parser: Parser, argv: list[str] | str, where: str) -> argparse.Namespace:
    """Parse ``argv`` (a list or a shell-quoted line); a bad option becomes a DefinitionError at ``where``."""
    try:
        return parser.parse_args(shlex.split(argv) if isinstance(argv, str) else argv)
    except (ArgumentError, ValueError) as exc:
        raise DefinitionError(f"{parser.prog}: {exc}", where=where) from None


@dataclass
class CellDecl:
    """One declared cell: a task, a setup cell or the parameters cell."""

    role: str  # "task" | "setup" | "params"
    source: str  # without the %%nbflow line; setup cells without %nbflow lines
    label: str  # "Cell 4/9" (file, as JupyterLab's status bar) or "cell In [7]" (kernel, its prompt)
    index: int | None = None
    name: str | None = None
    options: argparse.Namespace | None = None
    key: Any = None  # the kernel's identity of the cell (cell id or name)

    @property
    def task(self) -> tuple[str, argparse.Namespace]:
        """A task cell's ``(name, options)``: :func:`task_decl` sets both."""
        assert self.role == "task" and self.name is not None and self.options is not None, self
        return self.name, self.options


@dataclass
class PipelineDecl:
    """Pipeline-level settings of a notebook."""

    name: str | None = None
    schedule: str | None = None
    kernel: str | None = None
    description: str = ""
    cells: list[CellDecl] = field(default_factory=list)


def split_magic(source: str) -> tuple[str | None, str, str]:
    """``(subcommand, rest of the first line, body)`` of a ``%%nbflow`` cell, else ``(None, "", source)``."""
    first, _, body = source.partition("\n")
    m = _CELL_MAGIC.match(first)
    if not m:
        return None, "", source
    sub, _, rest = m.group(1).strip().partition(" ")
    return sub, rest.strip(), body


def clean_setup(source: str) -> str:
    """A setup cell without ``%nbflow`` / ``%load_ext nbflow`` lines ("" when nothing is left)."""
    kept = [line for line in source.splitlines() if not _DROP_LINE.match(line)]
    return "\n".join(kept).strip("\n") if any(line.strip() for line in kept) else ""


def pipeline_line(source: str) -> str | None:
    """The arguments of a ``%nbflow pipeline ...`` line in ``source``, if any."""
    for line in source.splitlines():
        m = _PIPELINE_LINE.match(line)
        if m:
            return m.group(1).strip()
    return None


def task_decl(argv: list[str] | str, body: str, label: str, where: str, **extra: Any) -> CellDecl:
    """A task declaration from ``%%nbflow task`` arguments (or tags turned into arguments)."""
    options = parse(task_parser(), argv, where)
    # the same cell gives the same fingerprint from a file and from a kernel (which adds a newline)
    return CellDecl("task", body.strip("\n"), label, name=options.name, options=options, **extra)


def declared_params(source: str, where: str) -> dict[str, Any]:
    """Top-level ``name = literal`` (or ``name: type = literal``) assignments of a parameters cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise DefinitionError(
            f"parameters cell has a SyntaxError: {exc.msg} (line {exc.lineno})", where=where
        ) from None
    found: dict[str, Any] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and value is not None:  # value is set with target
            try:
                found[target.id] = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError):
                pass  # not a literal: stays a plain variable of the setup, not a run parameter
    return found


def resolve_inputs(cells: list[CellDecl], prefix: str) -> dict[str, dict[str, str]]:
    """Per task: ``{input variable: producing task}``; a variable nobody outputs is an error."""
    tasks = [c for c in cells if c.role == "task"]
    outputs = {c.task[0]: set(c.task[1].outputs) for c in tasks}
    resolved: dict[str, dict[str, str]] = {}
    for i, cell in enumerate(tasks):
        where = f"{prefix}:{cell.label}"
        name, options = cell.task
        mapping = resolved[name] = {}
        for var in options.inputs:
            after = [a for a in options.after if var in outputs.get(a, ())]
            if len(after) > 1:
                raise DefinitionError(
                    f"task '{name}' takes input '{var}', which its --after tasks {' and '.join(after)} both output",
                    where=where,
                    hint="rename one of the outputs, or keep only one of them in --after",
                )
            above = [t.task[0] for t in tasks[:i] if var in outputs[t.task[0]]]
            if not after and not above:
                raise DefinitionError(
                    f"task '{name}' takes input '{var}' but no task cell above it (or in --after) outputs '{var}'",
                    where=where,
                    hint=f"add --outputs {var} to the cell that computes it (tag nbflow:outputs={var})",
                )
            mapping[var] = after[0] if after else above[-1]
    return resolved


def build_pipeline(
    decl: PipelineDecl, *, name: str, prefix: str, file: str | None, cwd: str, kernel_name: str
) -> Pipeline:
    """The pipeline of cell tasks that ``decl`` declares. ``prefix`` starts every error's ``where``."""
    tasks = [c for c in decl.cells if c.role == "task"]
    if not tasks:
        raise PipelineLoadError(
            "declares no cell tasks",
            where=prefix,
            hint="start a cell with `%%nbflow task NAME` or tag it nbflow:task=NAME",
        )
    setup = tuple(
        SetupCell(c.label, c.source, c.role == "params", c.index) for c in decl.cells if c.role in ("setup", "params")
    )
    params: dict[str, Any] = {}
    for cell in decl.cells:
        if cell.role == "params":
            params.update(declared_params(cell.source, f"{prefix}:{cell.label}"))
    inputs = resolve_inputs(decl.cells, prefix)
    try:
        pipeline = Pipeline(name, schedule=decl.schedule, params=params, description=decl.description)
    except NbflowError as exc:
        exc.where = prefix
        raise
    # A Pipeline records the file that created it; here that is this notebook (or none), not nbflow's caller.
    pipeline.file, pipeline.base_dir = file, Path(cwd)
    pipeline.site, pipeline.where = (prefix, 0), prefix
    with pipeline:
        for cell in tasks:
            name, o = cell.task
            options = {
                k: v
                for k, v in (
                    ("retries", o.retries),
                    ("retry_delay", o.retry_delay),
                    ("timeout", o.timeout),
                    ("queue", o.queue),
                    ("trigger_rule", o.trigger_rule),
                    ("reads", o.reads or None),
                    ("cache", o.cache),
                    ("cache_ttl", o.cache_ttl),
                    ("produces", o.produces or None),
                )
                if v is not None
            }
            task = CellTask(
                name,
                cell.source,
                label=cell.label,
                index=cell.index,
                setup=setup,
                inputs=inputs[name],
                outputs=o.outputs,
                params=list(params),
                kernel_name=kernel_name,
                cwd=cwd,
                cell_timeout=o.cell_timeout,
                site=(prefix, cell.label),
                **options,
            )
            task.upstream_ids.update(o.after)
    return pipeline


# --- the file form -------------------------------------------------------------------------


def _tag_options(tags: list[str]) -> tuple[str | None, list[str], set[str]]:
    """Task name, other ``nbflow:KEY=VALUE`` tags as task arguments, and bare ``nbflow:FLAG`` tags."""
    name, argv, flags = None, [], set()
    for tag in tags:
        if not tag.startswith(TAG_PREFIX):
            continue
        key, sep, value = tag[len(TAG_PREFIX) :].partition("=")
        if not sep:
            flags.add(key)
        elif key == "task":
            name = value
        elif key != "pipeline":
            argv += [f"--{key}", value]
    return name, argv, flags


def notebook_decl(nb: Any, path: Path) -> PipelineDecl:
    """Read the declarations of a saved notebook (magic lines and tags)."""
    decl = PipelineDecl(name=(nb.metadata.get("nbflow") or {}).get("pipeline"))
    decl.schedule = (nb.metadata.get("nbflow") or {}).get("schedule")
    seen_task = False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        label = cell_name(index, len(nb.cells))
        where = f"{path}:{label}"
        tags = list(cell.get("metadata", {}).get("tags", []))
        for tag in tags:
            if tag.startswith(f"{TAG_PREFIX}pipeline="):
                decl.name = tag.split("=", 1)[1]
        sub, rest, body = split_magic(cell.source)
        tag_name, tag_argv, flags = _tag_options(tags)
        if sub == "task" or (sub is None and tag_name):
            try:
                magic = shlex.split(rest) if sub == "task" else []
            except ValueError as exc:
                raise DefinitionError(f"%%nbflow task: {exc}", where=where) from None
            if magic and tag_name and magic[0] != tag_name:
                raise DefinitionError(f"the tag says task '{tag_name}' but %%nbflow says '{magic[0]}'", where=where)
            # the magic line's options come last, so they win over the tags
            argv = magic[:1] + tag_argv + magic[1:] if magic else [*filter(None, [tag_name]), *tag_argv]
            decl.cells.append(task_decl(argv, body, label, where, index=index))
            seen_task = True
            continue
        if sub not in (None, "setup", "params"):
            raise DefinitionError(f"unknown cell magic '%%nbflow {sub}'", where=where, hint="use task, setup or params")
        args = pipeline_line(cell.source)
        if args is not None:
            opts = parse(pipeline_parser(), args, where)
            decl.name, decl.schedule, decl.kernel = opts.name, opts.schedule or decl.schedule, opts.kernel
            decl.description = opts.description
        role = "params" if sub == "params" or "parameters" in tags else "setup"
        if sub is None and role == "setup" and "setup" not in flags and seen_task:
            continue  # exploration below the task cells is not part of the pipeline
        source = clean_setup(body)
        if source:
            decl.cells.append(CellDecl(role, source, label, index=index))
    return decl


def load_notebook(path: str | Path) -> Pipeline:
    """The pipeline of cell tasks a saved notebook declares (no kernel is started)."""
    import nbformat

    from nbflow import params as nbparams

    path = Path(path).expanduser().resolve()
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, not a notebook
        raise PipelineLoadError(f"cannot read the notebook: {exc}", where=str(path)) from exc
    decl = notebook_decl(nb, path)
    kernel = decl.kernel or nbparams.check_kernel(path)
    return build_pipeline(
        decl, name=decl.name or path.stem, prefix=str(path), file=str(path), cwd=str(path.parent), kernel_name=kernel
    )


def kernel_pipeline_name(notebook_name: str) -> str:
    """The name a kernel gives the pipeline of its notebook's cell tasks when ``%nbflow
    pipeline NAME`` does not: the notebook file's stem, made a valid name."""
    stem = Path(notebook_name).stem if notebook_name else ""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".-") or "notebook"
