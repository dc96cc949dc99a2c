"""Tests for nbflow/tasks/kernel.py: the kernel hand-shake and shutdown without idle waits, on real ipykernels."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nbflow.tasks import kernel
from nbflow.tasks.kernel import PromptKernelClient, PromptKernelManager, shutdown_idle_kernel
from nbflow.tasks.nbrun import run_notebook
from tests.conftest import make_notebook, pid_alive

pytestmark = pytest.mark.timeout(90)


async def _started() -> tuple[PromptKernelManager, PromptKernelClient]:
    km = PromptKernelManager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=30)
    return km, kc


async def _printed(kc: PromptKernelClient, code: str, wait: float = 10.0) -> str:
    """What ``code`` prints, as read from IOPub, skipping messages about other requests."""
    msg_id = kc.execute(code)
    text = ""
    until = time.monotonic() + wait
    while time.monotonic() < until:
        msg = await kc.iopub_channel.get_msg(timeout=until - time.monotonic())
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return text
    raise AssertionError(f"no idle status for {code!r} within {wait} s; printed so far: {text!r}")


def test_ready_kernels_publish_on_iopub_at_once():
    """wait_for_ready returns only once IOPub is connected: the first execution's output is seen.

    (A PUB socket drops what it sends before the client's SUB is connected; returning too early
    would lose this output.) Three kernels, each checked right after the hand-shake.
    """

    async def check() -> list[str]:
        seen = []
        for i in range(3):
            km, kc = await _started()
            try:
                seen.append(await _printed(kc, f"print('hello {i}')"))
            finally:
                kc.stop_channels()
                await km.shutdown_kernel(now=True)
        return seen

    assert asyncio.run(check()) == ["hello 0\n", "hello 1\n", "hello 2\n"]


def test_shutdown_of_an_idle_kernel_lets_it_exit_by_itself(tmp_path: Path):
    """No SIGTERM when the kernel exits within the grace: its atexit handlers run."""
    mark = tmp_path / "atexit.txt"

    async def check() -> int:
        km, kc = await _started()
        await _printed(kc, f"import atexit, pathlib\natexit.register(pathlib.Path({str(mark)!r}).write_text, 'bye')")
        pid = km.provisioner.process.pid
        kc.stop_channels()
        await shutdown_idle_kernel(km)
        return pid

    pid = asyncio.run(check())
    assert not pid_alive(pid)
    assert mark.read_text() == "bye"


def test_a_kernel_that_does_not_exit_is_terminated_after_the_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A kernel still busy exiting after EXIT_GRACE is terminated (jupyter_client would wait 2.5 s).

    Its atexit handler sleeps 60 s before writing a file: the file never appears, the process
    is gone, and the shutdown returned long before the handler would have finished.
    """
    monkeypatch.setattr(kernel, "EXIT_GRACE", 0.5)
    mark = tmp_path / "late.txt"
    nb = make_notebook(
        tmp_path / "late.ipynb",
        [
            f"""
        import atexit, pathlib, time
        atexit.register(lambda: (time.sleep(60), pathlib.Path({str(mark)!r}).write_text('late')))
        """,
        ],
    )
    started = time.monotonic()
    outcome = run_notebook(str(nb), str(tmp_path / "out.ipynb"), startup_timeout=30)
    assert outcome.ok, outcome.message
    assert time.monotonic() - started < 30
    assert outcome.kernel_pid and not pid_alive(outcome.kernel_pid)
    assert not mark.exists()


def test_a_notebook_kernel_gets_the_whole_grace_to_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Through run_notebook: after the last cell the kernel is asked to exit and is left
    EXIT_GRACE to do it. Its atexit handler needs 3 s: jupyter_client's own shutdown would have
    sent SIGTERM after 2.5 s (and the file would be missing); with a 6 s grace it finishes."""
    monkeypatch.setattr(kernel, "EXIT_GRACE", 6.0)
    mark = tmp_path / "atexit.txt"
    nb = make_notebook(
        tmp_path / "bye.ipynb",
        [
            f"""
        import atexit, pathlib, time
        atexit.register(lambda: (time.sleep(3), pathlib.Path({str(mark)!r}).write_text('bye')))
        """,
            "x = 1",
        ],
    )
    outcome = run_notebook(str(nb), str(tmp_path / "out.ipynb"), startup_timeout=30)
    assert outcome.ok, outcome.message
    assert outcome.kernel_pid and not pid_alive(outcome.kernel_pid)
    assert mark.read_text() == "bye"


def test_local_kernels_listen_on_unix_sockets_that_are_removed_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No TCP ports to race for between worker processes: the channels are socket files with a
    random name under the temp folder, gone once the kernel is shut down."""
    from nbflow.tasks import kernelpool

    kernelpool.drain()  # a replacement the pool starts after an earlier test's notebook would put its sockets here
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR

    async def check() -> tuple[str, list[str], str]:
        km, kc = await _started()
        try:
            files = sorted(p.name for p in tmp_path.iterdir() if p.is_socket())
            return km.transport, files, await _printed(kc, "print('over ipc')")
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()

    transport, files, printed = asyncio.run(check())
    assert transport == "ipc" and printed == "over ipc\n"
    assert len(files) == 5 and all(f.startswith("nbflow-kernel-") for f in files), files
    assert not [p for p in tmp_path.iterdir() if p.is_socket()]


def test_a_temp_folder_too_deep_for_socket_paths_keeps_tcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr("tempfile.tempdir", None)

    async def check() -> tuple[str, str]:
        km, kc = await _started()
        try:
            return km.transport, await _printed(kc, "print('over tcp')")
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()

    assert asyncio.run(check()) == ("tcp", "over tcp\n")
