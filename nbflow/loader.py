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
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nbflow import codeship
from nbflow.dag import Pipeline
from nbflow.exceptions import NbflowError, PipelineLoadError, PipelineNotFoundError


def _module_name(path: Path) -> str:
    return "nbflow_pipeline_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _user_frame(tb: traceback.StackSummary, path: Path) -> str | None:
    frames = [f for f in tb if Path(f.filename).resolve() == path]
    if frames:
        return f"{path}:{frames[-1].lineno}"
    return None


def load_file(path: str | os.PathLike[str]) -> dict[str, Pipeline]:
    """Import ``path`` and return its module-level pipelines by name."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise PipelineNotFoundError(
            f"no pipeline file {path}", hint="pass the path of a .py file that defines a Pipeline"
        )
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
        codeship.remember(str(spec.origin), path.read_text(encoding="utf-8"))
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


def load_pipeline(path: str | os.PathLike[str], name: str | None = None) -> Pipeline:
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


# --- the DAG folder --------------------------------------------------------------------------

_PROBE = """
import json, sys
from nbflow.exceptions import NbflowError
from nbflow.loader import load_file
try:
    names = sorted(load_file(sys.argv[1]))
    print(json.dumps({"ok": names}))
except NbflowError as exc:
    print(json.dumps({"where": exc.where or sys.argv[1], "error": str(exc)}))
"""


def _is_candidate(path: Path) -> bool:
    """Like Airflow's safe mode: only files that mention nbflow are pipeline files."""
    if any(part.startswith((".", "_")) for part in path.parts[-1:]) or "__pycache__" in path.parts:
        return False
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    if path.suffix == ".ipynb":  # only notebooks of cell tasks; other notebooks are task inputs
        return "%%nbflow task" in text or "nbflow:task=" in text
    return "nbflow" in text and "Pipeline" in text


class FolderLoader:
    """Loads every pipeline file of a folder; one broken or hanging file never stops the rest.

    A file that changed since the last :meth:`load` (mtime or size) is first imported in
    a throw-away subprocess with a time limit (``import_timeout``; one such probe per CPU at
    a time), so a file that hangs on import is killed and recorded as an error; if that
    succeeds it is imported here, files in name order. A file
    that fails keeps its last healthy pipelines in :attr:`pipelines` (their active runs can
    still be driven) but is listed in :attr:`errors` and must not be scheduled.
    """

    def __init__(self, folder: str | Path, import_timeout: float = 30.0):
        self.folder = Path(folder).expanduser().resolve()
        self.import_timeout = import_timeout
        self._stamps: dict[Path, tuple[int, int]] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.files: dict[str, Path] = {}  # pipeline name -> file
        self.errors: dict[str, tuple[str, str]] = {}  # file -> (location, message)

    def load(self) -> bool:
        """Re-read changed, new and removed files; returns whether anything changed."""
        if not self.folder.is_dir():
            raise PipelineNotFoundError(
                f"DAG folder {self.folder} does not exist", hint="create it or set NBFLOW_DAGS_FOLDER"
            )
        seen = {
            p
            for p in sorted(self.folder.rglob("*"))
            if p.suffix in (".py", ".ipynb") and p.is_file() and _is_candidate(p)
        }
        changed = False
        for gone in set(self._stamps) - seen:
            changed = True
            del self._stamps[gone]
            self.errors.pop(str(gone), None)
            for name in [n for n, f in self.files.items() if f == gone]:
                del self.files[name], self.pipelines[name]
        fresh = []
        for path in sorted(seen):
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self._stamps.get(path) != stamp:
                self._stamps[path] = stamp
                fresh.append(path)
        # the probes (one interpreter each) run side by side; the imports here stay in order
        with ThreadPoolExecutor(max(1, min(len(fresh), os.cpu_count() or 2))) as pool:
            for path, report in zip(fresh, pool.map(self._probe, fresh)):
                self._load_one(path, report)
        return changed or bool(fresh)

    def _probe(self, path: Path) -> dict[str, str]:
        """Import ``path`` in a throw-away interpreter with a time limit: its report."""
        import json
        import subprocess

        try:
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=self.import_timeout
            )
            report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
            if report is None:
                tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
                report = {"where": str(path), "error": f"{path}: import crashed ({tail[0]})"}
        except subprocess.TimeoutExpired:
            report = {
                "where": str(path),
                "error": f"{path}: import took longer than {self.import_timeout:g}s and was killed",
            }
        return report

    def _load_one(self, path: Path, report: dict[str, str]) -> None:
        self.errors.pop(str(path), None)
        if "error" in report:
            self.errors[str(path)] = (report["where"], report["error"])
            return
        try:
            found = load_file(path)
        except NbflowError as exc:
            self.errors[str(path)] = (exc.where or str(path), str(exc))
            return
        for name, pipeline in found.items():
            other = self.files.get(name)
            if other is not None and other != path and str(other) not in self.errors:
                self.errors[str(path)] = (
                    f"{pipeline.where}",
                    f"{pipeline.where}: pipeline '{name}' is also defined in {other}; pipeline names must be unique",
                )
                continue
            self.pipelines[name], self.files[name] = pipeline, path
        for name in [n for n, f in self.files.items() if f == path and n not in found]:
            del self.files[name], self.pipelines[name]

    def broken(self, name: str) -> bool:
        """Whether the file defining pipeline ``name`` currently fails to load."""
        return name in self.files and str(self.files[name]) in self.errors
