"""Kernel zygotes: pooled ipykernels forked from a process that has already imported ipykernel.

A kernel start costs ~0.5 s of CPU here, nearly all of it Python importing ipykernel, IPython,
zmq, jupyter_client and debugpy. A *zygote* is one long-lived process per worker process (and
kernel Python and environment) that has done those imports once, and started nothing (no zmq
context, no thread); for each pooled kernel it forks a child that runs ``IPKernelApp`` from the
kernel's connection file, as ``python -m ipykernel_launcher -f FILE`` would (measured: ~0.06 s
of CPU per kernel instead of ~0.5 s). The forked kernel never ran user code before it is taken,
so an attempt's isolation is as with a fresh start. On by default; ``NBFLOW_KERNEL_ZYGOTE=0``
turns it off (the pool then launches each kernel as ``jupyter_client`` does).

Used by :class:`nbflow.tasks.kernelpool.KernelPool` only (an attempt's own, unpooled start is
unchanged), and only for a kernel spec whose command is ``PYTHON -m ipykernel_launcher -f
{connection_file} [ARGS...]``, on Linux (``prctl``, ``fork``, ``SCM_RIGHTS``); otherwise, or if the
zygote cannot start, or it is turned off, the pool launches the kernel as before. (The two kernel
start failures seen in its first benchmark runs were the papermill baseline's: its kernels listen
on TCP ports, nbflow's on Unix sockets; see benchmarks/README.md.)

What a forked kernel keeps of a launched one:

- **Process group**: the child calls ``setsid()``, so it leads its own session and group
  (pgid == pid), and nbflow's kill paths (``killpg``) reach it and what it starts.
- **Dies with its worker**: the zygote is started on the worker's lasting thread with
  ``PR_SET_PDEATHSIG`` (SIGKILL), so it dies with the worker; each forked kernel sets
  ``PR_SET_PDEATHSIG`` (SIGKILL) towards the zygote (single-threaded, so its death is the
  thread's), so a SIGKILLed worker takes the zygote and then every kernel with it. ipykernel's
  parent poller (``JPY_PARENT_PID``) watches the zygote, as a second line.
- **Alive/dead and exit status**: the worker is not the kernel's parent, so it holds a
  :class:`ForkedProcess` (``Popen``'s ``poll``/``wait``/``send_signal``/``kill``/``stdout``)
  that watches the pid through a ``pidfd`` (no confusion with a reused pid) and learns the exit
  status from the zygote, which reaps its children and reports each one. A kernel whose zygote
  died before reporting is given ``-SIGKILL`` (what killed it).
- **Output**: the kernel's stdout/stderr is a pipe created by the worker and handed to the
  zygote with ``SCM_RIGHTS``, read by the pool as a launched kernel's ``Popen.stdout``.
- **Environment and working folder**: the child replaces its environment with the one the pool
  asked for and ``chdir``s to the requested folder; a zygote serves one environment (the
  variables read at interpreter start-up are those of the zygote's), another environment gets
  a zygote of its own.

What differs: the forked kernels of one zygote share its string-hash seed (``PYTHONHASHSEED``
randomisation happens at interpreter start), and a zygote lives until its worker process ends
(its kernels die with it, so it is never stopped while one of them may be in use).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from nbflow import procs

__all__ = ["ForkedProcess", "Zygote", "close_idle", "enabled", "launch", "zygote_args", "zygotes"]

START_TIMEOUT = 60.0  # seconds a zygote may take to import ipykernel
REPLY_TIMEOUT = 30.0  # seconds a zygote may take to fork a kernel
MAX_MESSAGE = 1 << 20

# Run by the zygote (``python -c``): import what a kernel imports, then fork kernels on request.
SERVER = r"""
import os, sys
if sys.path and sys.path[0] == "":
    del sys.path[0]  # as ipykernel_launcher does; IPython puts '' back in the kernel
import atexit, ctypes, json, select, signal, socket, traceback
import ipykernel_launcher
from ipykernel import kernelapp
for name in ("ipykernel.debugger", "sqlite3", "pdb", "pydoc", "faulthandler", "unicodedata", "code",
             "gzip", "mimetypes", "http.client", "xmlrpc.client", "nbflow", "nbflow.artifacts"):
    try:
        __import__(name)  # what IPKernelApp imports while it starts, and nbflow's context cell
    except Exception:
        pass
prctl = ctypes.CDLL(None, use_errno=True).prctl
prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
ZPID = os.getpid()
sock = socket.socket(fileno=os.dup(0))
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.signal(signal.SIGCHLD, lambda *a: None)
signal.set_wakeup_fd(wake_w)
sys.stdout.flush()
sys.stderr.flush()


def send(obj):
    sock.sendall(json.dumps(obj).encode())


def child(req, fds):
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the zygote
        if os.getppid() != ZPID:
            os._exit(1)
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        for fd in [*fds, wake_r, wake_w, null]:
            os.close(fd)
        sock.close()
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["JPY_PARENT_PID"] = str(ZPID)  # ipykernel's poller watches the zygote
        sys.argv = [ipykernel_launcher.__file__, *req["args"]]
        code = 0
        kernelapp.launch_new_instance()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


send({"ready": ZPID})
while True:
    readable, _, _ = select.select([sock, wake_r], [], [])
    if wake_r in readable:
        try:
            while os.read(wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        reap()
    if sock in readable:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        if not msg:
            os._exit(0)  # the worker closed its end (or died)
        req = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            child(req, fds)
        for fd in fds:
            os.close(fd)
        send({"pid": pid, "id": req["id"]})
        reap()
"""


def enabled() -> bool:
    """Whether zygotes may be used here: Linux-like (fork, prctl, SCM_RIGHTS, pidfd) and not turned off."""
    if os.environ.get("NBFLOW_KERNEL_ZYGOTE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False  # turned off
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(socket, "send_fds")
        and hasattr(os, "pidfd_open")
        and procs.parent_death_preexec() is not None
    )


def zygote_args(cmd: list[str]) -> list[str] | None:
    """The kernel app's arguments of a ``PYTHON -m ipykernel_launcher -f FILE ...`` command, else None."""
    if len(cmd) >= 5 and cmd[1:4] == ["-m", "ipykernel_launcher", "-f"]:
        return cmd[3:]
    return None


class ForkedProcess:
    """A forked kernel as the worker sees it: the parts of ``subprocess.Popen`` that
    jupyter_client's provisioner, the pool and nbflow's kill paths use."""

    def __init__(self, pid: int, stdout: Any, zygote: Zygote, args: list[str]):
        self.pid = pid
        self.args = args
        self.stdout = stdout
        self.stdin: Any = None
        self.stderr: Any = None
        self.returncode: int | None = None
        self._zygote = zygote
        self._lock = threading.Lock()  # the pidfd is closed once, by one thread
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already gone and reaped
            self._pidfd = None

    def _exited(self) -> bool:
        if self._pidfd is None:
            return True
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return bool(readable)

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            if not self._exited():
                return None
            # the zygote reaps it and reports its status at once; a dead zygote reports nothing
            code = self._zygote.exit_code(self.pid, wait=1.0 if self._zygote.alive() else 0.0)
            self.returncode = code if code is not None else -int(signal.SIGKILL)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(procs.POLL if deadline is None else max(0.0, min(procs.POLL, deadline - time.monotonic())))
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never signal a pid that may have been reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """One zygote process (for one kernel Python and environment) and the worker's end of its socket."""

    def __init__(self, python: str, env: dict[str, str]):
        self.python = python
        self.env = env
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()  # one request at a time
        self._replies: dict[str, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._forked: list[ForkedProcess] = []
        preexec = procs.parent_death_preexec()

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [python, "-c", SERVER],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=tempfile.gettempdir(),
                start_new_session=True,
                preexec_fn=preexec,
            )

        try:
            self.process = procs.in_lasting_thread(start)
        finally:
            theirs.close()
        self._sock.settimeout(START_TIMEOUT)
        try:
            hello = json.loads(self._sock.recv(MAX_MESSAGE) or b"{}")
        except (OSError, ValueError):
            hello = {}
        if hello.get("ready") != self.process.pid:
            self.close()
            raise RuntimeError("the kernel zygote did not start")
        self._sock.settimeout(None)
        threading.Thread(target=self._read, name="nbflow-zygote-reader", daemon=True).start()

    def alive(self) -> bool:
        return not self._closed and self.process.poll() is None

    def _read(self) -> None:
        while True:
            try:
                msg = self._sock.recv(MAX_MESSAGE)
            except OSError:
                msg = b""
            with self._cond:
                if not msg:
                    self._closed = True
                    self._cond.notify_all()
                    return
                data = json.loads(msg)
                if "exit" in data:
                    self._exits[int(data["exit"])] = int(data["code"])
                else:
                    self._replies[str(data.get("id"))] = data
                self._cond.notify_all()

    def exit_code(self, pid: int, wait: float = 0.0) -> int | None:
        """The exit status the zygote reported for its child ``pid`` (waiting up to ``wait`` s), or None."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._closed, timeout=wait)
            return self._exits.pop(pid, None)

    def fork(self, args: list[str], cwd: str, env: dict[str, str]) -> ForkedProcess:
        """Fork a kernel running ``IPKernelApp`` with ``args``; its stdout/stderr go to a pipe read as ``.stdout``."""
        request_id = os.urandom(8).hex()
        read_end, write_end = os.pipe()
        try:
            with self._lock:
                if not self.alive():
                    raise RuntimeError("the kernel zygote is gone")
                payload = json.dumps({"id": request_id, "args": args, "cwd": cwd, "env": env}).encode()
                socket.send_fds(self._sock, [payload], [write_end])
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        with self._cond:
            got = self._cond.wait_for(lambda: request_id in self._replies or self._closed, timeout=REPLY_TIMEOUT)
            reply = self._replies.pop(request_id, None)
        if not got or reply is None:
            os.close(read_end)
            raise RuntimeError("the kernel zygote did not fork a kernel")
        forked = ForkedProcess(
            int(reply["pid"]), open(read_end, "rb"), self, [self.python, "-m", "ipykernel_launcher", *args]
        )
        with self._lock:
            self._forked = [p for p in self._forked if p.returncode is None] + [forked]
        return forked

    def idle(self) -> bool:
        """Whether every kernel it forked has ended (so stopping it kills nothing in use)."""
        with self._lock:
            return all(p.poll() is not None for p in self._forked)

    def close(self) -> None:
        """Stop the zygote (its kernels die with it) and reap it."""
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass
        procs.kill_now(self.process.pid, exited=procs.waiter(self.process))


# --- this process's zygotes -----------------------------------------------------------------------

_zygotes: dict[tuple[str, tuple[tuple[str, str], ...]], Zygote] = {}
_zygotes_pid: int | None = None
_zygotes_lock = threading.Lock()
_failed: set[str] = set()  # kernel Pythons whose zygote could not start: not tried again


def _env_key(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if not k.startswith("JPY_")))


def launch(cmd: list[str], cwd: str, env: dict[str, str]) -> ForkedProcess | None:
    """A kernel for ``cmd`` forked from this process's zygote for its Python and environment
    (started on first use), or None when a zygote cannot serve it (the caller launches it)."""
    global _zygotes_pid
    args = zygote_args(cmd)
    if args is None or not enabled():
        return None
    python = cmd[0]
    key = (python, _env_key(env))
    with _zygotes_lock:
        if _zygotes_pid != os.getpid():  # a forked child: its parent's zygotes are not its own
            _zygotes.clear()
            _zygotes_pid = os.getpid()
        if python in _failed:
            return None
        zygote = _zygotes.get(key)
        if zygote is None or not zygote.alive():
            try:
                zygote = _zygotes[key] = Zygote(python, {k: v for k, v in env.items() if not k.startswith("JPY_")})
            except Exception:  # noqa: BLE001 - no zygote for this Python: launch as before
                _failed.add(python)
                _zygotes.pop(key, None)
                return None
    try:
        return zygote.fork(args, cwd, env)
    except Exception:  # noqa: BLE001 - a zygote that cannot fork now: launch this one as before
        return None


def close_idle() -> None:
    """Stop (and reap) this process's zygotes none of whose kernels is alive: a worker's pool drains
    (its pooled kernels are killed first), so the zygote's CPU time, and its kernels', is counted
    as the worker's children's, as launched kernels' is. One with a kernel in use is left to die
    with the worker."""
    with _zygotes_lock:
        if _zygotes_pid != os.getpid():
            return
        for key, zygote in list(_zygotes.items()):
            if zygote.idle():
                del _zygotes[key]
                zygote.close()


def zygotes() -> list[Zygote]:
    """This process's zygotes (for tests)."""
    with _zygotes_lock:
        return list(_zygotes.values()) if _zygotes_pid == os.getpid() else []
