"""``@task(python=...)``: call a task's function in another Python interpreter.

The other interpreter need not have nbflow (Airflow's ExternalPythonOperator): nbflow writes
the call into a temporary folder, starts ``python RUNNER`` there, and reads the outcome back.
:data:`RUNNER` is a self-contained script of the standard library (plus ``cloudpickle`` when
the pickle transport is used). Two transports:

- ``pickle``: when the interpreter has ``cloudpickle`` and this Python's minor version, the
  function (by value, with its closure and what it uses of its module), the arguments and the
  return value cross as cloudpickle;
- ``json`` otherwise: the function's source (its decorators left out; imports go inside the
  function, as with Airflow's virtualenv operators) and the arguments as JSON; the return
  value comes back as JSON.

A value that cannot cross is the task's error, naming the task, the argument and its type.
The function's own exception comes back with its traceback (file and line of the pipeline
file). The process leads a process group of its own, registered with the attempt, so a
timeout or a cancel kills it (:mod:`nbflow.procs`).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from nbflow import procs
from nbflow.record import AttemptRecord

if TYPE_CHECKING:
    from nbflow.tasks.base import AttemptContext
    from nbflow.tasks.python import PythonTask

__all__ = ["RUNNER", "Interpreter", "call_external", "check_options", "probe", "run_elsewhere"]

#: The script the other interpreter runs: ``python RUNNER FOLDER``. FOLDER holds ``call.json``
#: (transport, function source or ``function.pkl``, arguments) and gets ``result.json`` (or
#: ``result.pkl``). Standard library only, any Python 3.
RUNNER = r"""
import json, linecache, os, sys, traceback

def main(folder):
    with open(os.path.join(folder, "call.json")) as fh:
        call = json.load(fh)
    pickled = call["transport"] == "pickle"
    try:
        if pickled:
            import cloudpickle
            with open(os.path.join(folder, "call.pkl"), "rb") as fh:
                fn, args, kwargs = cloudpickle.load(fh)
        else:
            scope = {"__name__": "__nbflow_task__"}
            text = "\n" * (call["line"] - 1) + call["source"]  # the pipeline file's line numbers
            # tracebacks show the lines even where the pipeline file is not (another machine)
            linecache.cache[call["file"]] = (len(text), None, text.splitlines(True), call["file"])
            code = compile(text, call["file"], "exec")
            exec(code, scope)
            fn, args, kwargs = scope[call["name"]], call["args"], call["kwargs"]
    except BaseException as exc:
        return failed(folder, exc, "cannot load the function and its arguments in " + sys.executable)
    sys.stdout.flush()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return failed(folder, exc, None)
    if pickled:
        import cloudpickle
        try:
            data = cloudpickle.dumps(value)
        except BaseException as exc:
            return failed(folder, exc, "the return value (%s) does not pickle" % type(value).__name__)
        with open(os.path.join(folder, "result.pkl"), "wb") as fh:
            fh.write(data)
        return write(folder, {"ok": True})
    try:
        text = json.dumps(value, allow_nan=False)
        exact = json.loads(text) == value and not isinstance(value, tuple)
    except (TypeError, ValueError):
        exact = False
    if not exact:
        return write(folder, {"ok": False, "cannot_cross": type(value).__module__ + "." + type(value).__qualname__})
    write(folder, {"ok": True, "value": value})

def failed(folder, exc, context):
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:  # this script's own frame
        tb = tb.tb_next
    write(folder, {
        "ok": False, "ename": type(exc).__name__, "evalue": str(exc), "context": context,
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    })

def write(folder, outcome):
    with open(os.path.join(folder, "result.json"), "w") as fh:
        json.dump(outcome, fh)

main(sys.argv[1])
"""

#: asked of an interpreter once: its version, and whether cloudpickle imports there
_PROBE = (
    "import json, sys\n"
    "try:\n    import cloudpickle; cp = cloudpickle.__version__\nexcept Exception:\n    cp = None\n"
    "print(json.dumps({'version': list(sys.version_info[:3]), 'cloudpickle': cp}))"
)


class Interpreter:
    """What nbflow knows of another Python: its path, version and whether it has cloudpickle."""

    def __init__(self, path: str, version: tuple[int, ...], cloudpickle: str | None):
        self.path, self.version, self.cloudpickle = path, version, cloudpickle

    @property
    def transport(self) -> str:
        """``pickle`` when values may cross as cloudpickle (same minor version, cloudpickle there); else ``json``."""
        return "pickle" if self.cloudpickle and self.version[:2] == sys.version_info[:2] else "json"


def probe(path: str) -> Interpreter:
    """Ask the interpreter at ``path`` what it is (cached per path and modification time).
    Raises ``RuntimeError`` naming the path when it is missing or does not run."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"no Python interpreter at {path} (not an executable file)")
    return _probe(path, os.stat(path).st_mtime)


@functools.lru_cache(maxsize=64)
def _probe(path: str, _mtime: float) -> Interpreter:
    try:
        out = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True).stdout
        info = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise RuntimeError(f"{path} does not run as a Python interpreter: {exc}") from exc
    return Interpreter(path, tuple(info["version"]), info["cloudpickle"])


_BY_VALUE = threading.Lock()


class CannotCross(Exception):
    """A value that the chosen transport cannot carry to (or from) the other interpreter."""


def _json_value(task_id: str, what: str, value: Any, interp: Interpreter) -> Any:
    """``value`` if JSON carries it exactly, else :class:`CannotCross` naming it and the fix."""
    try:
        exact = json.loads(json.dumps(value, allow_nan=False)) == value and not isinstance(value, tuple)
    except (TypeError, ValueError):
        exact = False
    if not exact:
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise CannotCross(
            f"task '{task_id}': {what} of type {kind} cannot cross to {interp.path} as JSON "
            f"(Python {'.'.join(map(str, interp.version))}, {_why_json(interp)}); pass JSON values "
            "(dict, list, str, int, float, bool, None), or install cloudpickle in that interpreter "
            f"(same Python {sys.version_info[0]}.{sys.version_info[1]} as the worker) to pass any picklable value"
        )
    return value


def _why_json(interp: Interpreter) -> str:
    return "no cloudpickle there" if not interp.cloudpickle else "another Python version than the worker's"


#: a function's source without its decorators, its file and the line it starts on
Source = tuple[str, str, int]


def function_source(fn: Callable[..., Any]) -> Source:
    """The function's source without its decorators, its file and first line (so tracebacks
    in the other interpreter name the pipeline file's lines). ``CannotCross`` when there is none."""
    try:
        lines, start = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "<task>"
    except (OSError, TypeError) as exc:
        raise CannotCross(f"the source of {getattr(fn, '__qualname__', fn)} is not available: {exc}") from exc
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name != fn.__name__:
        raise CannotCross(f"{getattr(fn, '__qualname__', fn)} is not a function defined with def")
    skip = node.lineno - 1  # the decorator lines (@task(...)) come before the def line
    return "".join(source.splitlines(keepends=True)[skip:]), file, start + skip


def _pickled_call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> bytes:
    """cloudpickle of the call, the function's module by value (the other side cannot import it)."""
    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    by_value = module is not None and module.__name__ not in sys.stdlib_module_names and module.__name__ != "__main__"
    with _BY_VALUE:  # cloudpickle's registry is process-wide: attempts in other threads wait
        if by_value:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # a module cloudpickle refuses (not importable by name)
                by_value = False
        try:
            return cloudpickle.dumps((fn, args, kwargs))
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(module)


def call_external(
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    python: str,
    task_id: str,
    timeout: float | None,
    grace: float,
    register: Callable[[int], None],
    log: IO[str],
    source: Source | None = None,
) -> tuple[bool, Any]:
    """Call ``fn(*args, **kwargs)`` in the interpreter ``python``: (True, the return value) or
    (False, the failed attempt's record). The process's output goes to ``log``."""
    try:
        interp = probe(python)
    except RuntimeError as exc:
        return False, AttemptRecord.failure("exception", f"task '{task_id}': {exc}", ename="InterpreterError")
    with tempfile.TemporaryDirectory(prefix="nbflow-call-") as folder:
        try:
            call = _write_call(folder, fn, args, kwargs, task_id, interp, source)
        except CannotCross as exc:
            return False, AttemptRecord.failure("exception", str(exc), ename="CannotCross")
        log.write(f"nbflow: calling {call['name']} in {python} (Python {'.'.join(map(str, interp.version))}, ")
        log.write(f"arguments and result as {interp.transport})\n")
        log.flush()
        runner = os.path.join(folder, "runner.py")
        with open(runner, "w", encoding="utf-8") as fh:
            fh.write(RUNNER)
        proc = subprocess.Popen(
            [python, runner, folder],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        register(proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            procs.terminate(proc.pid, grace, exited=procs.waiter(proc))
            return False, AttemptRecord.failure(
                "task_timeout",
                f"task exceeded timeout={timeout:g}s and was killed ({python})",
                ename="TimeoutError",
                evalue=f"timeout={timeout:g}s",
            )
        except BaseException:
            procs.terminate(proc.pid, grace, exited=procs.waiter(proc))
            raise
        return _outcome(folder, code, task_id, interp)


def _write_call(
    folder: str,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    task_id: str,
    interp: Interpreter,
    source: Source | None,
) -> dict:
    call: dict[str, Any] = {"transport": interp.transport, "name": getattr(fn, "__name__", "function")}
    if interp.transport == "pickle":
        try:
            data = _pickled_call(fn, args, kwargs)
        except Exception as exc:
            raise CannotCross(f"task '{task_id}': the function or its arguments do not pickle: {exc}") from exc
        with open(os.path.join(folder, "call.pkl"), "wb") as fh:
            fh.write(data)
    else:
        try:
            text, file, line = source or function_source(fn)
        except CannotCross as exc:
            raise CannotCross(
                f"task '{task_id}': {exc}; {interp.path} gets functions as source ({_why_json(interp)}): "
                "define the function with def in the pipeline file"
            ) from exc
        call.update(source=text, file=file, line=line)
        call["args"] = [_json_value(task_id, f"argument {i + 1}", v, interp) for i, v in enumerate(args)]
        call["kwargs"] = {k: _json_value(task_id, f"argument '{k}'", v, interp) for k, v in kwargs.items()}
    with open(os.path.join(folder, "call.json"), "w", encoding="utf-8") as fh:
        json.dump(call, fh)
    return call


def _outcome(folder: str, code: int, task_id: str, interp: Interpreter) -> tuple[bool, Any]:
    """What the runner wrote in ``folder`` as (ok, value or failed record)."""
    try:
        with open(os.path.join(folder, "result.json"), encoding="utf-8") as fh:
            result = json.load(fh)
    except (OSError, ValueError):
        return False, AttemptRecord.failure(
            "exception",
            f"task '{task_id}': the process in {interp.path} ended with exit code {code} without a result",
            ename="ProcessDied",
            evalue=str(code),
        )
    if "cannot_cross" in result:
        return False, AttemptRecord.failure(
            "exception",
            f"task '{task_id}': its return value of type {result['cannot_cross']} cannot cross back from "
            f"{interp.path} as JSON ({_why_json(interp)}); return JSON values (dict, list, str, int, float, "
            "bool, None), e.g. a model's parameters or a file path",
            ename="CannotCross",
        )
    if not result["ok"]:
        message = f"{result['ename']}: {result['evalue']}"
        if result.get("context"):
            message = f"task '{task_id}': {result['context']}: {message}"
        return False, AttemptRecord.failure(
            "exception", message, ename=result["ename"], evalue=result["evalue"], traceback=result["traceback"]
        )
    if interp.transport == "json":
        return True, result["value"]
    try:
        import cloudpickle

        with open(os.path.join(folder, "result.pkl"), "rb") as fh:
            return True, cloudpickle.load(fh)
    except (ImportError, AttributeError, pickle.UnpicklingError) as exc:
        return False, AttemptRecord.failure(
            "exception",
            f"task '{task_id}': its return value from {interp.path} cannot be loaded in this worker "
            f"({type(exc).__name__}: {exc}); return values whose types the worker's Python has too",
            ename="CannotCross",
        )


def check_options(
    fn: Callable[..., Any], task_name: str, python: Any, requirements: Any
) -> tuple[str | None, tuple[str, ...], Source | None]:
    """``python=`` and ``requirements=`` of ``@task`` checked: (interpreter path, requirements,
    the function's source read now, so that a worker without the pipeline file can send it)."""
    from nbflow.exceptions import DefinitionError

    if python is not None and requirements is not None:
        raise DefinitionError(
            f"task '{task_name}' sets both python= and requirements=",
            hint="python= runs an existing interpreter; requirements= builds a virtualenv: choose one",
        )
    if python is not None and not isinstance(python, (str, os.PathLike)):
        raise DefinitionError(
            f"task '{task_name}': python= must be the path of an interpreter, got {type(python).__name__}",
            hint='e.g. @task(python="/opt/envs/ml/bin/python")',
        )
    source = None
    if python is not None or requirements is not None:
        try:
            source = function_source(fn)
        except (CannotCross, SyntaxError):  # a lambda: only the pickle transport can send it
            source = None
    if requirements is None:
        return (os.fspath(python) if python is not None else None), (), source
    if isinstance(requirements, str) or not all(isinstance(r, str) and r.strip() for r in requirements):
        raise DefinitionError(
            f"task '{task_name}': requirements= must be a list of requirement strings, got {requirements!r}",
            hint='e.g. @task(requirements=["scikit-learn==1.5"])',
        )
    return None, tuple(r.strip() for r in requirements), source


def run_elsewhere(task: PythonTask, args: tuple, kwargs: dict, ctx: AttemptContext) -> tuple[bool, Any]:
    """The call of a ``@task`` (a :class:`~nbflow.tasks.python.PythonTask`) in its ``python``,
    or in the cached virtualenv of its ``requirements`` (built first if needed, its progress in
    the task log): (True, value) or (False, the failed record)."""
    from nbflow.config import get_settings
    from nbflow.tasks.venvs import VenvBuildError, ensure_venv

    python, requirements, task_id = task.python, task.requirements, ctx.task_id
    os.makedirs(os.path.dirname(ctx.log_path), exist_ok=True)
    with open(ctx.log_path, "a", encoding="utf-8") as log:
        if python is None:
            try:
                python = ensure_venv(
                    requirements,
                    get_settings().venv_cache,
                    log=log,
                    register=ctx.register_process,
                    grace=ctx.kill_grace,
                )
            except (VenvBuildError, OSError) as exc:
                return False, AttemptRecord.failure(
                    "exception",
                    f"task '{task_id}': cannot build a virtualenv for {' '.join(requirements)}: {exc}",
                    ename=type(exc).__name__,
                )
        return call_external(
            task.fn,
            args,
            kwargs,
            python=python,
            task_id=task_id,
            timeout=task.timeout,
            source=task.shipped_source,
            grace=ctx.kill_grace,
            register=ctx.register_process,
            log=log,
        )
