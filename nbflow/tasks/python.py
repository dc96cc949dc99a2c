"""``@task``: Python functions as tasks, TaskFlow style.

Inside ``with Pipeline(...)``, calling a decorated function does not run it: it adds a
task whose arguments may be other tasks' handles (their values arrive at run time) and
returns the new task's handle. Outside a pipeline the call runs the plain function, so
the same code is testable in a notebook cell.

A function that declares a ``params`` argument (not passed in the call) receives the
run's parameters as a dict; ``logical_date``, ``data_interval_start``,
``data_interval_end`` and ``run_id`` arguments receive the run's dates (aware datetimes)
and id. String arguments may be Jinja templates (``load("{{ ds }}")``, see
:mod:`nbflow.templating`), rendered when the task runs. With ``timeout=`` the function runs in a forked child
process that is killed when time is up.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import multiprocessing
import os
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any, Unpack

from nbflow import procs
from nbflow.artifacts import write_value
from nbflow.dag import OutputRef, ParamRef, current_pipeline, find_refs, resolve_refs, to_refs
from nbflow.exceptions import ArtifactStoreError, DefinitionError
from nbflow.fingerprint import Unhashable, digest, function_parts, stable_repr
from nbflow.record import AttemptRecord
from nbflow.taskoptions import TaskOptions
from nbflow.tasks.base import CONTEXT_NAMES, AttemptContext, BaseTask
from nbflow.tasks.external import check_options, run_elsewhere
from nbflow.tasks.flow import Flow
from nbflow.templating import render_value


class PythonTask(Flow, BaseTask):
    """One call of a Python function; its return value is the task's value."""

    kind = "python"
    value_style = "single"

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        *,
        name: str | None = None,
        branch: bool = False,
        short_circuit: bool = False,
        ignore_downstream_trigger_rules: bool = True,
        setup: bool = False,
        teardown: bool = False,
        setups: Any = None,
        **options: Any,
    ):
        self.fn = fn
        self.python, self.requirements, self.shipped_source = check_options(
            fn, name or fn.__name__, options.pop("python", None), options.pop("requirements", None)
        )
        self.args = to_refs(tuple(args))
        self.kwargs = to_refs(dict(kwargs))
        declared = _parameters(fn)
        self.wants_params = "params" in declared and "params" not in kwargs
        self.context_args = [n for n in CONTEXT_NAMES if n in declared and n not in kwargs]
        super().__init__(name or fn.__name__, explicit_id=name is not None, **options)
        self.set_flow(
            branch=branch, short_circuit=short_circuit, ignore_downstream_trigger_rules=ignore_downstream_trigger_rules
        )
        self.set_role(setup=setup, teardown=teardown, setups=setups)
        self.declare_templates({"args": self.args, "kwargs": self.kwargs})

    def references(self) -> list[OutputRef | ParamRef]:
        """References among the call's arguments."""
        return [*find_refs(self.args), *find_refs(self.kwargs)]

    def code_fingerprint(self) -> str:
        """Hash of the function's source (or bytecode) and the call's arguments."""
        code_object = getattr(self.fn, "__code__", None)
        code = _source(code_object) if code_object is not None else repr(self.fn)
        return hashlib.sha256(repr((code, self.args, sorted(self.kwargs.items()))).encode()).hexdigest()

    def code_parts(self, memo: dict) -> dict[str, str]:
        """The function's code (and what it calls from its own module) and its literal arguments."""
        key = ("function", self.fn)
        if key not in memo:  # 1,000 calls of one function: its code is looked at once per decision pass
            try:
                memo[key] = function_parts(self.fn, unwrap=_unwrap)
            except Unhashable as exc:
                memo[key] = exc
        shared = memo[key]
        if isinstance(shared, Unhashable):
            raise shared
        parts = {**shared, "args": digest(stable_repr((self.args, self.kwargs), "an argument"))}
        if self.python or self.requirements:
            parts["interpreter"] = digest(stable_repr((self.python, sorted(self.requirements)), "an interpreter"))
        return parts

    def received_params(self, params: Any) -> list[str]:
        """Parameters among its arguments; all of them when it declares ``params``."""
        names = [ref.name for ref in self.references() if isinstance(ref, ParamRef)]
        return [*names, *params] if self.wants_params else names

    def received_context(self) -> list[str]:
        """The run values its signature asks for."""
        return list(self.context_args)

    def label(self) -> str:
        """``python: module.function``."""
        return f"python: {getattr(self.fn, '__qualname__', self.fn)}"

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:
        """Call the function with upstream values in place of handles; store its return value."""
        loaded: dict[tuple[str, str | int | None], Any] = {}

        def output(ref: OutputRef) -> Any:
            if (ref.task_id, ref.key) not in loaded:
                loaded[ref.task_id, ref.key] = ctx.upstream[ref.task_id].value(ref.key)
            return loaded[ref.task_id, ref.key]

        try:
            args, kwargs = self.args, self.kwargs  # templates rendered before references: values are never templates
            if self.templates:
                values = ctx.template_values()
                args = render_value(args, values, task=self.task_id, field="args")
                kwargs = render_value(kwargs, values, task=self.task_id, field="kwargs")
            args = resolve_refs(args, output, ctx.params)
            kwargs = resolve_refs(kwargs, output, ctx.params)
        except ArtifactStoreError as exc:  # the artifact store is away: retries apply, as to a failed write
            return AttemptRecord.storage_failure(exc)
        except Exception as exc:  # a missing key in an upstream value, an unreadable artifact
            return AttemptRecord.from_exception(exc, reason="input_missing")
        if self.wants_params:
            kwargs["params"] = dict(ctx.params)
        for name in self.context_args:
            kwargs[name] = ctx.run_context.get(name)
        if self.python or self.requirements:
            ok, value = run_elsewhere(self, args, kwargs, ctx)
        elif self.timeout is not None:
            ok, value = _call_in_child(self.fn, args, kwargs, self.timeout, ctx.kill_grace, ctx.register_process)
        else:
            try:
                ok, value = True, self.fn(*args, **kwargs)
            except Exception as exc:
                ok, value = False, AttemptRecord.from_exception(exc, skip_frames=1)
        if not ok:
            return value  # its traceback names the pipeline file: see nbflow.codeship
        record = AttemptRecord(ok=True)
        if value is not None:
            try:
                record.artifacts.append(write_value(ctx.artifact_dir, "return", value).as_dict())
            except OSError as exc:  # the artifact root refused it: retries may find it writable again
                record = AttemptRecord.storage_failure(exc)
            except Exception as exc:  # the value itself cannot be stored (it does not pickle)
                record = AttemptRecord.from_exception(exc)
                record.message = f"cannot store the return value: {record.message}"
        return self.with_choice(record, value)


def _unwrap(obj: Any) -> Any:
    """The function of a ``@task`` factory found among a function's globals (else ``obj``)."""
    return obj.fn if isinstance(obj, TaskFactory) else obj


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


# --- timeouts: run in a forked child and kill it when time is up -------------------------------


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    import cloudpickle

    os.setsid()  # its own process group, so subprocesses it starts die with it
    try:
        payload = (True, fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        payload = (False, AttemptRecord.from_exception(exc, skip_frames=1))
    try:
        data = cloudpickle.dumps(payload)
    except Exception as exc:  # an unpicklable return value
        data = cloudpickle.dumps((False, AttemptRecord.from_exception(exc)))
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send_bytes(data)
    conn.close()
    os._exit(0)


def _call_in_child(
    fn: Callable[..., Any], args: tuple, kwargs: dict, timeout: float, grace: float, register: Callable[[int], None]
) -> tuple[bool, Any]:
    """(True, return value) or (False, the failed attempt's record)."""
    import cloudpickle

    sys.stdout.flush()
    sys.stderr.flush()
    mp = multiprocessing.get_context("fork")
    recv, send = mp.Pipe(duplex=False)
    proc = mp.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
    proc.start()
    pid = proc.pid
    assert pid is not None  # set by start()
    register(pid)  # the child calls setsid(): its pid is its process group
    send.close()
    try:
        if recv.poll(timeout):
            try:
                return cloudpickle.loads(recv.recv_bytes())
            except EOFError:
                return False, AttemptRecord.failure(
                    "exception",
                    f"task process died with exit code {proc.exitcode}",
                    ename="ProcessDied",
                    evalue=str(proc.exitcode),
                )
            finally:
                proc.join()
        procs.terminate(pid, grace, exited=procs.waiter(proc))
        return False, AttemptRecord.failure(
            "task_timeout",
            f"task exceeded timeout={timeout:g}s and was killed",
            ename="TimeoutError",
            evalue=f"timeout={timeout:g}s",
        )
    finally:
        recv.close()
        if proc.is_alive():
            procs.terminate(pid, grace, exited=procs.waiter(proc))


# --- the decorator -----------------------------------------------------------------------------


class TaskFactory:
    """What ``@task`` returns: call it inside a pipeline to add a task, outside to run the function."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options
        self.__nbflow_task_factory__ = fn  # so ordering a factory (slow >> ok) names the fix (dag._not_a_task)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_pipeline() is None:
            return self.fn(*args, **kwargs)
        return PythonTask(self.fn, args, kwargs, **self.options)

    def options_(self, **options: Any) -> TaskFactory:
        """A copy with other options (``name=``, ``retries=`` ...) for one call site."""
        return TaskFactory(self.fn, {**self.options, **options})

    def partial(self, *args: Any, **kwargs: Any) -> Partial:
        """Fix the arguments every instance of a mapped call shares: ``train.partial(data=d).expand(C=[...])``."""
        return Partial(self, args, kwargs)

    def expand(self, *, zip: bool = False, **mapped: Any) -> PythonTask:
        """A mapped call: one task instance per value of each keyword list (per point of their
        cross product, or of their pairs with ``zip=True``); see :mod:`nbflow.mapspec`."""
        return self.partial().expand(zip=zip, **mapped)

    def __repr__(self) -> str:
        return f"<nbflow task factory {self.fn.__qualname__}>"


class Partial:
    """A ``@task`` function with some arguments fixed, waiting for :meth:`expand`."""

    def __init__(self, factory: TaskFactory, args: tuple, kwargs: dict[str, Any]):
        self.factory, self.args, self.kwargs = factory, args, kwargs

    def expand(self, *, zip: bool = False, **mapped: Any) -> PythonTask:
        """The mapped call (see :meth:`TaskFactory.expand`)."""
        fn = self.factory.fn
        if current_pipeline() is None:
            raise DefinitionError(
                f"{fn.__name__}.expand(...) is called outside a pipeline",
                hint="map tasks inside `with Pipeline('name') as pipeline:`",
            )
        both = set(self.kwargs) & set(mapped)
        if both:
            raise DefinitionError(
                f"{fn.__name__}: {', '.join(sorted(both))} given both to partial() and to expand()",
                hint="a mapped argument goes in expand() only",
            )
        t = PythonTask(fn, self.args, {**self.kwargs, **mapped}, **self.factory.options)
        t._map_over(dict.fromkeys(mapped, "kwargs"), zip)
        return t

    def __repr__(self) -> str:
        return f"<nbflow partial {self.factory.fn.__qualname__} {self.kwargs}>"


def task(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    branch: bool = False,
    short_circuit: bool = False,
    ignore_downstream_trigger_rules: bool = True,
    setup: bool = False,
    teardown: bool = False,
    setups: Any = None,
    python: str | os.PathLike[str] | None = None,
    requirements: list[str] | None = None,
    **common: Unpack[TaskOptions],
) -> Any:
    """Decorate a function as a task: ``@task`` or ``@task(retries=1, timeout=60, queue="gpu")``.

    ``branch=True``: the function returns the downstream tasks to follow (ids or handles), the
    others are skipped; ``short_circuit=True``: a falsy return value skips everything downstream
    (``ignore_downstream_trigger_rules=False``: only the tasks directly downstream);
    ``setup=True``, ``teardown=True`` (with ``setups=[...]``): see :mod:`nbflow.setupteardown`.
    ``python=``: run it in that interpreter; ``requirements=``: in a cached virtualenv with
    those packages (see :mod:`nbflow.tasks.external`).

    The options every task kind takes (``retries``, ``timeout``, ``queue``, ``pool``,
    ``on_failure`` ...) are :class:`nbflow.taskoptions.TaskOptions`.
    """
    options: dict[str, Any] = {
        "name": name,
        **common,
        "branch": branch,
        "short_circuit": short_circuit,
        "ignore_downstream_trigger_rules": ignore_downstream_trigger_rules,
        "setup": setup,
        "teardown": teardown,
        "setups": setups,
    }
    if python is not None or requirements is not None:
        options.update(python=python, requirements=requirements)
    if fn is not None:
        return TaskFactory(fn, options)
    return lambda f: TaskFactory(f, options)


@functools.lru_cache(maxsize=4096)
def _source(code: CodeType) -> str:
    """A function's source text (its bytecode's repr when there is no source), read once per
    code object: a pipeline of 1,000 calls of one function reads its file once, and a
    redefined function (new code object) is read again."""
    try:
        return inspect.getsource(code)
    except (OSError, TypeError):
        return repr(code)
