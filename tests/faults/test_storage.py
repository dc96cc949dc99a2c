"""A read-only or full artifact root (RELIABILITY 34): attempts fail with `storage_error`,
the path and the OS error; the worker process stays alive; the task's retries apply. It
used to look like a dead worker (`worker_lost`, and on `local` the worker process exited)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow import api
from nbflow.config import reset_settings
from nbflow.loader import load_pipeline

pytestmark = pytest.mark.faults

PIPE = """
from nbflow import Pipeline, task, shell

with Pipeline("storage") as pipeline:
    @task(retries=1)
    def chatty():
        print("a line for the log")
        return "x" * {size}

    chatty()
    shell("echo from the shell", name="command", retries=1)
"""


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block (root only; skips with the reason otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _run(write_pipeline, monkeypatch, root: Path, size: int) -> api.RunResult:
    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", str(root))
    reset_settings()
    api.reset()
    pipeline = load_pipeline(write_pipeline(PIPE.replace("{size}", str(size))))
    return api.run_pipeline(pipeline, executor="local", parallelism=1)


def _attempts(run_id: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for a in api.run_details(run_id)["attempts"]:
        out.setdefault(a["task_id"], []).append(a)
    return out


def test_a_read_only_artifact_root_is_a_storage_error_not_a_dead_worker(
    nbflow_home, write_pipeline, monkeypatch, tmp_path
):
    with tmpfs(tmp_path / "ro", "size=1m") as root:
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        result = _run(write_pipeline, monkeypatch, root, 10)
    assert not result.ok
    attempts = _attempts(result.run_id)
    for task in ("chatty", "command"):
        tries = attempts[task]
        assert [(a["state"], a["reason"]) for a in tries] == [
            ("up_for_retry", "storage_error"),
            ("failed", "storage_error"),
        ]
        assert "Read-only file system" in tries[0]["message"] and str(root) in tries[0]["message"]
        assert "NBFLOW_ARTIFACT_ROOT" in tries[0]["message"]
    pids = {a["pid"] for tries in attempts.values() for a in tries}
    assert len(pids) == 1  # one worker process ran all four attempts: it never died


def test_a_full_artifact_root_is_a_storage_error_and_retried(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    with tmpfs(tmp_path / "full", "size=256k") as root:
        result = _run(write_pipeline, monkeypatch, root, 2_000_000)  # a 2 MB return value on a 256 kB disk
    chatty = _attempts(result.run_id)["chatty"]
    assert [(a["state"], a["reason"]) for a in chatty] == [
        ("up_for_retry", "storage_error"),
        ("failed", "storage_error"),
    ]
    assert "No space left on device" in chatty[0]["message"]
    assert result.task("command")["state"] == "success"  # small writes still fit
    assert len({a["pid"] for a in chatty}) == 1
