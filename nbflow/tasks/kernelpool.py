"""Pre-started kernels: a small pool of fresh, never used kernels per kernel name, per process.

A kernel start (~0.3-0.5 s here) dominates short notebooks. A worker process that has run a
notebook with kernel ``python3`` keeps ``kernel_pool`` x its slots (``NBFLOW_KERNEL_POOL``,
default 1; 0 turns the pool off) kernels of that name started in the background, and the next
attempt *takes* one instead of starting its own. A kernel still serves exactly one attempt
(isolation as papermill's): the pool hands each kernel out once and never takes one back.

- **When kernels start**: only for kernel names a notebook attempt of this process has asked
  for (a worker that never runs a notebook starts no kernel), in a background thread after
  that attempt ends (not while it runs, so the replacement does not compete with it for CPU).
- **What a pooled kernel cannot honour**: a pooled kernel is started with this process's
  environment and a neutral working folder (an empty folder of its own). An attempt that wants
  another environment (an ``env=``, or a worker environment changed since the kernel started)
  or a kernel whose language is not Python gets a fresh start instead.
  The attempt's working folder is honoured with ``os.chdir`` in the kernel, run silently (no
  execution count, no history) before the first cell: a kernel start uses its working folder
  for nothing else (IPython reads no configuration from it and keeps ``''`` in ``sys.path``,
  which follows the current folder).
- **Health**: a kernel that died in the pool (``poll()``) is thrown away and replaced; one still
  booting is waited for (it started before a fresh one would).
- **Output**: the kernel process's own stdout/stderr (crash messages, C-level prints) go
  through a pipe to the attempt's log once taken (dropped before), as a fresh kernel's do.
- **Shutdown**: :func:`drain` (atexit, multiprocessing's finalizers, the executors' worker
  shutdown) kills every pooled kernel's process group and removes its socket files; a kernel
  being launched during a drain is not launched at all.
- **A worker killed outright** (SIGKILL, the OOM killer) runs none of that. A pooled kernel is
  forked on this process's lasting thread with Linux's ``PR_SET_PDEATHSIG`` (SIGKILL), so it
  dies with the worker process (:func:`nbflow.procs.parent_death_preexec`), also while it
  boots and also when the orphan would be reparented to a subreaper rather than init. (Forked
  from the short-lived thread that starts it, it would be killed as soon as that thread ended.)
  ipykernel's own parent poller (``JPY_PARENT_PID``, checked every second) is a second line
  where ``prctl`` is missing; it misses a parent that died while the kernel booted if the
  orphan's new parent is a subreaper, and a Python kernel other than ipykernel may have none.

- **Where pooled kernels come from**: on Linux, for a ``PYTHON -m ipykernel_launcher`` kernel
  spec, they are forked by this process's kernel zygote (:mod:`nbflow.tasks.zygote`, a process
  that has imported ipykernel once; ~0.06 s of CPU per kernel instead of ~0.5 s), through
  :class:`ZygoteProvisioner`; otherwise, or when no zygote can start, launched as above. A forked
  kernel leads its own process group, dies with the zygote, which dies with this process
  (``PR_SET_PDEATHSIG`` both), and is seen by the worker through a ``Popen``-like
  :class:`~nbflow.tasks.zygote.ForkedProcess`. :meth:`KernelPool.drain` also stops and reaps the
  zygotes none of whose kernels is alive.

The attempt adopts the kernel through :class:`PooledProvisioner` (a jupyter_client provisioner
that hands over the pool's process instead of launching one), so nbclient, the attempt's
kernel manager and the kill-on-timeout/cancel path see a pooled kernel exactly as a fresh one.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner

from nbflow import procs
from nbflow.tasks import zygote
from nbflow.tasks.kernel import PromptKernelManager

__all__ = [
    "KernelPool",
    "LaunchingProvisioner",
    "PooledKernel",
    "PooledProvisioner",
    "ZygoteProvisioner",
    "activate",
    "after_attempt",
    "current",
    "drain",
    "POOL_DIR_PREFIX",
]

POOL_DIR_PREFIX = "nbflow-kernel-pool-"  # a pooled kernel's working folder until it is taken
READY_TIMEOUT = 60.0  # seconds a pooled kernel may take to answer kernel_info
Key = tuple[str, tuple[str, ...]]  # kernel name, extra arguments (papermill passes one)


@dataclass(eq=False)
class PooledKernel:
    """One pre-started kernel process, and what adopting it needs."""

    kernel_name: str
    extra_arguments: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    ready: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    process: subprocess.Popen | zygote.ForkedProcess | None = None
    pgid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # connection info (key as bytes)
    argv: list[str] = field(default_factory=list)
    _sink: Any = None  # where the kernel's stdout/stderr go (the attempt's log), None: dropped
    _sink_lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def attach(self, sink: Any) -> None:
        """Send the kernel's own output to ``sink`` (a text file), or drop it (None)."""
        with self._sink_lock:
            self._sink = sink

    def detach(self, wait: float = 1.0) -> None:
        """Stop forwarding output, after what the ended kernel wrote (up to ``wait`` s) went out."""
        if self._reader is not None and self.process is not None and self.process.poll() is not None:
            self._reader.join(wait)
        self.attach(None)

    def _forward(self, stream: Any) -> None:
        fd = stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                with self._sink_lock:
                    if self._sink is not None:
                        try:
                            self._sink.write(chunk.decode("utf-8", "replace"))
                            self._sink.flush()
                        except (OSError, ValueError):  # the attempt's log was closed meanwhile
                            self._sink = None
        except OSError:
            pass
        finally:
            stream.close()

    def kill(self) -> None:
        """Kill the kernel's process group, reap it, remove its socket files."""
        if self.process is not None:
            procs.kill_now(self.pgid or self.process.pid, exited=procs.waiter(self.process))
        if self.info.get("transport") == "ipc":
            for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
                if name in self.info:
                    try:
                        os.remove(f"{self.info['ip']}-{self.info[name]}")
                    except OSError:
                        pass


class LaunchingProvisioner(LocalProvisioner):
    """A local provisioner that forks the kernel on this process's lasting thread, bound to die
    with this process (``PR_SET_PDEATHSIG``, see :mod:`nbflow.procs`): a pooled kernel's start."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """LocalProvisioner's launch, run on the lasting thread with the parent-death preexec."""
        preexec = procs.parent_death_preexec()
        if preexec is not None:
            kwargs["preexec_fn"] = preexec
        launch = super().launch_kernel(cmd, **kwargs)  # its body forks without awaiting anything
        return procs.in_lasting_thread(lambda: asyncio.run(launch))


class ZygoteProvisioner(LaunchingProvisioner):
    """A pooled kernel's start that forks the kernel from this process's zygote when one can serve
    its command (see :mod:`nbflow.tasks.zygote`), else launches it as :class:`LaunchingProvisioner`."""

    forked: bool = False

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """The zygote's fork, recorded as LocalProvisioner records a process it launched."""
        process = None
        if kwargs.get("stdout") == subprocess.PIPE and kwargs.get("stderr") == subprocess.STDOUT:
            cwd, env = kwargs.get("cwd"), kwargs.get("env")
            process = zygote.launch(cmd, str(cwd or os.getcwd()), dict(env if env is not None else os.environ))
        if process is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.forked = True
        self.process = process  # type: ignore[assignment]  # Popen's interface, not its class
        self.pid = self.pgid = process.pid  # the child called setsid(): it leads its group
        self.cwd = kwargs.get("cwd")
        return self.connection_info


class PooledProvisioner(LocalProvisioner):
    """A local provisioner whose "launch" adopts a pooled kernel's process (set :attr:`pooled`)."""

    pooled: PooledKernel | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Give the kernel manager the pooled kernel's connection info (in a file of its own)."""
        assert self.pooled is not None
        km = self.parent
        assert km is not None
        km.load_connection_info(self.pooled.info)
        km.write_connection_file()
        self.connection_info = km.get_connection_info()
        kwargs.pop("extra_arguments", None)
        kwargs["cmd"] = list(self.pooled.argv)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """The pooled process, as LocalProvisioner records a process it launched."""
        assert self.pooled is not None and self.pooled.process is not None
        self.process = self.pooled.process  # type: ignore[assignment]  # a zygote's fork has Popen's interface
        self.pid, self.pgid = self.pooled.process.pid, self.pooled.pgid
        self.cwd = kwargs.get("cwd")
        return self.connection_info


def chdir_code(path: str) -> str:
    """The code a pooled kernel runs (silently) first: go to the attempt's working folder."""
    return f"__import__('os').chdir({path!r})"


class KernelPool:
    """Up to ``size`` fresh kernels per kernel name, started in background threads."""

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()  # held while a process is being launched
        self._kernels: dict[Key, list[PooledKernel]] = {}
        self._seen: set[Key] = set()
        self._unpoolable: set[str] = set()  # kernel names whose language is not Python
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._dir: str | None = None

    # -- handing out ---------------------------------------------------------------------------
    def take(self, kernel_name: str, extra_arguments: Any = (), wait: float = READY_TIMEOUT) -> PooledKernel | None:
        """A fresh, alive kernel of that name and extra arguments (removed from the pool), or None
        (start one yourself). Marks them as used here, so :meth:`refill` keeps such kernels from now on.

        A kernel still booting is waited for up to ``wait`` seconds (the caller's start-up
        allowance): it started before a fresh one would, but one that is not ready by then is
        thrown away, never waited for beyond what a fresh start may take.
        """
        env = dict(os.environ)
        key = (kernel_name, tuple(extra_arguments or ()))
        while True:
            with self._lock:
                if self._closing or kernel_name in self._unpoolable:
                    return None
                self._seen.add(key)
                held = self._kernels.get(key, [])
                ready = [k for k in held if k.ready.is_set()]
                if not held:
                    return None
                chosen = (ready or held)[0]
                held.remove(chosen)
            if chosen.env != env or not chosen.ready.wait(wait) or chosen.failed or not chosen.alive():
                chosen.kill()  # started with another environment, not ready in time, or dead
                continue
            return chosen

    def refill(self, kernel_name: str, extra_arguments: Any = ()) -> None:
        """Start kernels of a name (and extra arguments) used here in the background, up to the size."""
        key = (kernel_name, tuple(extra_arguments or ()))
        with self._lock:
            if self._closing or key not in self._seen or kernel_name in self._unpoolable:
                return
            held = self._kernels.setdefault(key, [])
            for dead in [k for k in held if k.ready.is_set() and not k.alive()]:
                held.remove(dead)
                threading.Thread(target=dead.kill, daemon=True).start()
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix=POOL_DIR_PREFIX)
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(held) < self.size:
                entry = PooledKernel(kernel_name, key[1], dict(os.environ))
                held.append(entry)
                thread = threading.Thread(
                    target=self._start, args=(entry, self._dir), name=f"nbflow-kernel-pool-{kernel_name}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def kernels(self) -> list[PooledKernel]:
        """The kernels held now (booting or ready)."""
        with self._lock:
            return [k for held in self._kernels.values() for k in held]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until every kernel held is ready (or failed); whether all are ready and alive."""
        for kernel in self.kernels():
            if not kernel.ready.wait(timeout):
                return False
        return all(k.alive() and not k.failed for k in self.kernels())

    # -- starting and stopping ---------------------------------------------------------------
    def _start(self, entry: PooledKernel, workdir: str) -> None:
        try:
            asyncio.run(self._launch(entry, workdir))
        except Exception:  # noqa: BLE001 - a kernel that cannot start here: attempts start their own
            entry.failed = True
        finally:
            entry.ready.set()
        if entry.failed:
            with self._lock:
                held = self._kernels.get((entry.kernel_name, entry.extra_arguments), [])
                if entry in held:
                    held.remove(entry)
            entry.kill()

    async def _launch(self, entry: PooledKernel, workdir: str) -> None:
        km = PromptKernelManager(kernel_name=entry.kernel_name)
        spec = km.kernel_spec
        # os.chdir is Python; a kernelspec naming another provisioner (a remote kernel) is not ours to start
        provisioner = (spec.metadata.get("kernel_provisioner") or {}).get("provisioner_name") if spec else None
        if spec is None or (spec.language or "").lower() != "python" or provisioner not in (None, "local-provisioner"):
            with self._lock:
                self._unpoolable.add(entry.kernel_name)
            raise RuntimeError(f"kernel {entry.kernel_name!r} is not a local Python kernel")
        launcher = ZygoteProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=spec, parent=km)
        km.provisioner = launcher
        with self._launch_lock:
            if self._closing:
                raise RuntimeError("the kernel pool is draining")
            try:
                await km.start_kernel(
                    extra_arguments=list(entry.extra_arguments),
                    cwd=workdir,
                    env=entry.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            finally:  # a process launched before a later step failed is killed with the entry
                if launcher.process is not None:
                    entry.process = launcher.process
                    entry.pgid = launcher.pgid or launcher.process.pid
        entry.info = dict(km.get_connection_info())
        entry.argv = km.format_kernel_cmd(extra_arguments=list(entry.extra_arguments))
        assert entry.process is not None and entry.process.stdout is not None
        entry._reader = threading.Thread(target=entry._forward, args=(entry.process.stdout,), daemon=True)
        entry._reader.start()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=READY_TIMEOUT)
        finally:
            kc.stop_channels()
            km.cleanup_connection_file()  # read by the kernel; the adopting manager writes its own
            km.context.destroy(linger=0)  # the control socket; the kernel itself lives on

    def drain(self) -> None:
        """Kill every pooled kernel (booting ones too) and stop starting new ones."""
        with self._lock:
            self._closing = True
            held = [k for ks in self._kernels.values() for k in ks]
            self._kernels.clear()
        with self._launch_lock:  # every launched process is now recorded in its entry
            for kernel in held:
                kernel.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        zygote.close_idle()  # reaped here, so its CPU time counts as this process's children's


# --- this process's pool ------------------------------------------------------------------------

_pool: KernelPool | None = None
_pool_lock = threading.Lock()


def activate(slots: int = 1) -> KernelPool | None:
    """Give this (worker) process a pool of ``kernel_pool`` x ``slots`` kernels per kernel name.

    Idempotent (a larger ``slots`` grows the pool); None when the setting is 0. The pool is
    drained at exit (atexit and multiprocessing's finalizers, for Dask's worker processes).
    """
    global _pool
    from nbflow.config import get_settings

    per_slot = get_settings().kernel_pool
    if per_slot <= 0:  # turned off: a pool made before is drained
        drain()
        _pool = None
        return None
    with _pool_lock:
        if _pool is None or _pool._closing:
            _pool = KernelPool(per_slot * max(1, slots))
            atexit.register(_pool.drain)
            try:
                from multiprocessing import util

                util.Finalize(_pool, _pool.drain, exitpriority=10)
            except Exception:  # noqa: BLE001 - atexit alone then
                pass
        else:
            _pool.size = max(_pool.size, per_slot * max(1, slots))
        return _pool


def current() -> KernelPool | None:
    """This process's pool, if :func:`activate` made one."""
    return _pool


def after_attempt(pooled: PooledKernel | None, key: Key | None, kernel_was_ready: bool) -> None:
    """An attempt's kernel is gone: stop forwarding a taken kernel's output, and start a
    replacement in the background (only for a kernel that started: one that cannot start is
    not worth keeping ready)."""
    if pooled is not None:
        pooled.detach()
    pool = _pool
    if pool is not None and key and kernel_was_ready:
        pool.refill(*key)


def drain() -> None:
    """Drain this process's pool (a worker shutting down); the next :func:`activate` makes a new one."""
    pool = _pool
    if pool is not None:
        pool.drain()
