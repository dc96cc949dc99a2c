"""The kernel side of a notebook attempt: jupyter_client's async client and manager, minus idle waits.

Two waits of jupyter_client sit on every notebook's critical path, whatever the notebook
does (measured here with jupyter_client 8.10 and ipykernel 7.4, trivial notebook ~0.8 s):

- ``wait_for_ready`` ends by draining IOPub until it has been silent for 0.2 s: 200 ms per
  kernel start, every time. :class:`PromptKernelClient` ends the handshake as soon as IOPub
  has delivered the kernel's ``idle`` status *for our own* ``kernel_info`` request. That message
  proves what the silence was meant to show (IOPub is connected and the kernel has published
  everything about the request), so nothing waits on a clock.
- ``shutdown_kernel`` interrupts the kernel, asks it to shut down, then polls its process every
  0.1 s for up to 2.5 s before SIGTERM. A kernel exits ~120 ms after the request, so the 0.1 s
  poll costs ~80 ms on average; and ipykernel 7 sometimes never exits by itself (its control
  thread waits on an IOPub flush that its main thread has already stopped, for
  ``flush_timeout`` = 10 s), which costs the full 2.5 s (about 1 kernel in 15 here).
  :func:`shutdown_idle_kernel` asks once, polls every 10 ms, and sends SIGTERM after
  :data:`EXIT_GRACE` (SIGKILL as much later).

Both keep jupyter_client's contract: the same errors on a dead or unresponsive kernel, and no
kernel process left when the shutdown returns. :class:`PromptKernelManager` puts them
together, and starts local kernels on Unix sockets instead of TCP ports (no port race
between processes starting kernels at once).
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from queue import Empty
from typing import Any

import jupyter_client
import zmq
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type

__all__ = ["PromptKernelClient", "PromptKernelManager", "shutdown_idle_kernel", "EXIT_GRACE", "EXIT_POLL"]

# Seconds an idle kernel gets to exit on its own after the shutdown request (it needs ~0.12 s
# here); then SIGTERM, then SIGKILL after as long again. jupyter_client waits 2.5 s twice.
EXIT_GRACE = 1.0
EXIT_POLL = 0.01  # seconds between checks that the kernel's process has exited
REPLY_WAIT = 1.0  # seconds for a kernel_info reply before asking again (as jupyter_client)
IOPUB_WAIT = 0.05  # seconds for IOPub to show an idle status before asking again
RECONNECT_MS = 10  # zmq's retry interval for the client's channels (zmq's default: 100)
SOCKET_PATH_MAX = 100  # a Unix socket path must fit sun_path (108 bytes on Linux)


class PromptKernelClient(AsyncKernelClient):
    """``AsyncKernelClient`` whose start-up handshake returns on messages, not after silences."""

    def start_channels(self, *args: Any, **kwargs: Any) -> None:
        """Connect as jupyter_client does, retrying every :data:`RECONNECT_MS` (zmq: 100 ms).

        The channels connect before the kernel listens (it takes ~0.3 s to boot), so each one
        waits for zmq's next retry; with 100 ms between retries that is ~50 ms per channel.
        """
        self.context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)  # this client's own context
        super().start_channels(*args, **kwargs)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """Return once the kernel answered ``kernel_info`` and IOPub carried its idle status.

        A request whose idle status does not come within :data:`IOPUB_WAIT` is asked again (IOPub
        may connect after the shell channel, and a PUB socket drops what it sends before);
        the idle status of any of the requests will do. Raises ``RuntimeError`` as
        jupyter_client does: "Kernel died before replying to kernel_info" or "Kernel didn't
        respond in N seconds".
        """
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        asked: set[str] = set()
        replied = None
        while True:
            asked.add(self.kernel_info())
            if replied is None:
                replied = await self._next(self.shell_channel, asked, REPLY_WAIT, "kernel_info_reply")
            if replied is not None and await self._next(self.iopub_channel, asked, IOPUB_WAIT, "status", "idle"):
                self._adapt_protocol(replied)
                await self._run_first_code(deadline)
                return
            if not await self.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    async def _run_first_code(self, deadline: float) -> None:
        """Run the manager's ``first_code`` (e.g. a pooled kernel's ``os.chdir``) silently: no
        execution count, no history, no output. Raises ``RuntimeError`` if it fails."""
        code = getattr(self.parent, "first_code", None)
        if not code:
            return
        msg_id = self.execute(code, silent=True, store_history=False)
        wait = max(REPLY_WAIT, deadline - time.monotonic()) if deadline != math.inf else 60.0
        reply = await self._next(self.shell_channel, {msg_id}, wait, "execute_reply")
        if reply is None or reply["content"].get("status") != "ok":
            why = "no reply" if reply is None else f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
            raise RuntimeError(f"Kernel failed to run its set-up code ({why})")

    def _adapt_protocol(self, reply: dict) -> None:
        """Talk the kernel's protocol version, as jupyter_client's ``wait_for_ready`` does with
        the kernel_info reply (there through a private method; here with public names only)."""
        major = int(reply["content"]["protocol_version"].split(".")[0])
        if major != jupyter_client.protocol_version_info[0]:
            self.session.adapt_version = major

    @staticmethod
    async def _next(
        channel: Any, parents: set[str], wait: float, msg_type: str, state: str | None = None
    ) -> dict | None:
        """The first message of ``msg_type`` answering one of ``parents`` within ``wait`` seconds.

        Other messages are dropped (nbclient ignores what answers requests it did not send).
        With ``state``, only a status message in that execution state counts.
        """
        until = time.monotonic() + wait
        while (left := until - time.monotonic()) > 0:
            try:
                msg = await channel.get_msg(timeout=left)
            except Empty:
                return None
            if msg["msg_type"] == msg_type and msg["parent_header"].get("msg_id") in parents:
                if state is None or msg["content"].get("execution_state") == state:
                    return msg
        return None


class PromptKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` with :class:`PromptKernelClient`, kernels on Unix sockets, and
    :func:`shutdown_idle_kernel` for a kernel that :meth:`kernel_is_idle` says runs nothing."""

    client_factory = Type(PromptKernelClient, klass=PromptKernelClient)
    #: code the client runs silently once the kernel is ready (a pooled kernel's ``os.chdir``)
    first_code: str | None = None

    def kernel_is_idle(self) -> bool:
        """Whether the kernel runs nothing now (then it is not interrupted before shutdown)."""
        return False

    # ignore[override]: jupyter_client types KernelManager's sync start_kernel, not AsyncKernelManager's coroutine
    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        """Start as jupyter_client does, on IPC sockets when the kernel would listen on localhost.

        With TCP, each process picks its kernels' ports by binding port 0 and releasing it; two
        worker processes starting kernels at once can be handed the same port ("Address already
        in use", then no kernel). Socket files with a random name cannot collide, and ipykernel
        then does not warn that TCP is unencrypted.
        """
        if self.transport == "tcp" and self.ip in ("", "127.0.0.1", "localhost"):
            prefix = os.path.join(tempfile.gettempdir(), f"nbflow-kernel-{secrets.token_hex(8)}")
            if len(prefix) + 6 < SOCKET_PATH_MAX:  # "-12345": the channel's suffix
                self.transport, self.ip = "ipc", prefix
        await super().start_kernel(**kw)

    # ignore[override]: jupyter_client types KernelManager's sync shutdown_kernel, not AsyncKernelManager's coroutine
    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        """jupyter_client's shutdown, or :func:`shutdown_idle_kernel` for an idle kernel."""
        if now or restart or not self.has_kernel or not self.kernel_is_idle():
            await super().shutdown_kernel(now=now, restart=restart)
        else:
            await shutdown_idle_kernel(self)


async def shutdown_idle_kernel(km: AsyncKernelManager) -> None:
    """Shut down a kernel that runs nothing: ask it once, then SIGTERM, then SIGKILL.

    No interrupt first (jupyter_client sends SIGINT in case a cell still runs; an idle kernel
    has nothing to interrupt). Connection files and ports are released as ``shutdown_kernel``
    releases them.
    """
    km.shutting_down = True  # what jupyter_client's restarter checks
    km.stop_restarter()
    await km.request_shutdown()
    await km.finish_shutdown(waittime=2 * EXIT_GRACE, pollinterval=EXIT_POLL)
    await km.cleanup_resources()
