"""Load pipelines from ``.py`` files (and notebooks of cell tasks, see :mod:`nbflow.tasks.cellspec`).

Each file is imported as its own module (named after its path, never clashing with
another file's), with its folder on ``sys.path`` so it can import its neighbours, and
registered with cloudpickle to be pickled by value, so worker processes do not need to
import it. Any error while importing becomes a :class:`PipelineLoadError` (or the typed
nbflow error, e.g. :class:`DagCycleError`) whose ``where`` is ``file:line``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError, PipelineLoadError, PipelineNotFoundError


def _module_name(path: Path) -> str:
    return "nbflow_pipeline_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _user_frame(tb: traceback.StackSummary, path: Path) -> str | None:
    frames = [f for f in tb if Path(f.filename).resolve() == path]
    if frames:
        return f"{path}:{frames[-1].lineno}"
    return None


def load_file(path: str | Path) -> dict[str, Pipeline]:
    """Import ``path`` and return its module-level pipelines by name."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PipelineNotFoundError(f"no pipeline file {path}", hint="pass the path of a .py file that defines a Pipeline")
    if path.suffix == ".ipynb":  # a notebook of cell tasks (nbflow.tasks.cellspec); no kernel is started
        from nbflow.tasks.cellspec import load_notebook

        pipeline = load_notebook(path)
        return {pipeline.name: pipeline}
    if path.suffix != ".py":
        raise PipelineLoadError(
            f"cannot load pipelines from a '{path.suffix}' file",
            where=str(path),
            hint="pass a .py pipeline file or a notebook of cell tasks (.ipynb)",
        )
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except ValueError:  # already registered (the file is loaded again)
        pass
    try:
        spec.loader.exec_module(module)
    except NbflowError as exc:
        if not exc.where or not exc.where.startswith(str(path)):
            exc.where = _user_frame(traceback.extract_tb(exc.__traceback__), path) or exc.where or str(path)
        raise
    except SyntaxError as exc:
        raise PipelineLoadError(f"SyntaxError: {exc.msg}", where=f"{exc.filename}:{exc.lineno}") from exc
    except Exception as exc:
        where = _user_frame(traceback.extract_tb(exc.__traceback__), path) or str(path)
        raise PipelineLoadError(f"{type(exc).__name__}: {exc}", where=where) from exc
    found = {v.name: v for v in vars(module).values() if isinstance(v, Pipeline)}
    if not found:
        raise PipelineLoadError(
            "defines no Pipeline at module level",
            where=str(path),
            hint="create one with `with Pipeline('name') as pipeline:` at the top level of the file",
        )
    return found


def load_pipeline(path: str | Path, name: str | None = None) -> Pipeline:
    """The pipeline ``name`` of a file (or its only pipeline)."""
    found = load_file(path)
    if name is None:
        if len(found) > 1:
            raise PipelineNotFoundError(
                f"{path} defines several pipelines: {', '.join(sorted(found))}",
                hint="choose one with --pipeline NAME",
            )
        return next(iter(found.values()))
    if name not in found:
        raise PipelineNotFoundError(
            f"{path} defines no pipeline '{name}'", hint=f"it defines: {', '.join(sorted(found))}"
        )
    return found[name]
