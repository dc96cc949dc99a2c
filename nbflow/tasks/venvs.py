"""``@task(requirements=[...])``: cached virtualenvs, one per set of requirements.

A virtualenv is keyed by a hash of the sorted requirements and the base interpreter (its
path and version), kept under the ``venv_cache`` setting (``NBFLOW_VENV_CACHE``, default
``$NBFLOW_HOME/venvs``) and reused by every later attempt that asks for the same set
(Airflow's PythonVirtualenvOperator with its ``venv_cache_path``). It is built with ``uv`` when
``uv`` is on the PATH, else with ``python -m venv`` and pip; the build's output goes to the
task's log. A build is atomic: it happens in a temporary folder renamed into place once
complete, under a file lock, so two workers asking for the same set at once build it once
and a crashed build leaves nothing that looks ready.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO

from nbflow import procs

__all__ = ["venv_key", "ensure_venv", "VenvBuildError", "READY"]

#: written last into a complete virtualenv: what it was built from
READY = "nbflow-venv.json"


class VenvBuildError(RuntimeError):
    """The virtualenv could not be built (a requirement that does not install, no pip ...)."""


def venv_key(requirements: Sequence[str], base: str) -> str:
    """The cache key of ``requirements`` on the interpreter ``base``."""
    ident = {"requirements": sorted(r.strip() for r in requirements), "python": os.path.realpath(base)}
    ident["version"] = _version(base)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def _version(base: str) -> str:
    if os.path.realpath(base) == os.path.realpath(sys.executable):
        return sys.version
    out = subprocess.run([base, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def ensure_venv(
    requirements: Sequence[str],
    cache_dir: str,
    *,
    log: IO[str],
    register: Callable[[int], None] = lambda pgid: None,
    grace: float = 5.0,
    base: str | None = None,
) -> str:
    """The Python of a virtualenv with ``requirements`` installed, built now unless cached.
    Raises :class:`VenvBuildError` with the installer's message when the build fails."""
    base = base or sys.executable
    key = venv_key(requirements, base)
    os.makedirs(cache_dir, exist_ok=True)
    final = os.path.join(cache_dir, key)
    python = os.path.join(final, "bin", "python")
    shown = " ".join(sorted(requirements))
    if os.path.isfile(os.path.join(final, READY)):
        log.write(f"nbflow: reusing the cached virtualenv {final} ({shown})\n")
        log.flush()
        return python
    with open(os.path.join(cache_dir, f"{key}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.write(f"nbflow: waiting for another worker building the virtualenv {final}\n")
            log.flush()
            fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(final, READY)):  # built while this one waited
            log.write(f"nbflow: reusing the virtualenv {final} another worker built ({shown})\n")
            log.flush()
            return python
        if os.path.isdir(final):  # a folder without the marker: not ours to trust
            shutil.rmtree(final)
        _build(requirements, base, cache_dir, final, log, register, grace)
    return python


def _build(
    requirements: Sequence[str],
    base: str,
    cache_dir: str,
    final: str,
    log: IO[str],
    register: Callable[[int], None],
    grace: float,
) -> None:
    tmp = os.path.join(cache_dir, f".build-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    uv = shutil.which("uv")
    tool = "uv" if uv else "venv + pip"
    log.write(f"nbflow: building a virtualenv with {tool} for {' '.join(sorted(requirements))} in {final}\n")
    log.flush()
    py = os.path.join(tmp, "bin", "python")
    if uv:
        steps = [[uv, "venv", "--python", base, tmp], [uv, "pip", "install", "--python", py, *requirements]]
    else:
        steps = [
            [base, "-m", "venv", tmp],
            [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *requirements],
        ]
    try:
        for argv in steps:
            _run(argv, log, register, grace)
        with open(os.path.join(tmp, READY), "w") as fh:
            json.dump({"requirements": sorted(requirements), "base": base, "tool": tool}, fh)
        _relocate_scripts(tmp, final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.write(f"nbflow: virtualenv ready in {time.monotonic() - started:.1f}s: {final}\n")
    log.flush()


def _run(argv: list[str], log: IO[str], register: Callable[[int], None], grace: float) -> None:
    log.write(f"nbflow: $ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    register(proc.pid)  # a cancel or the task's timeout kills the installer too
    try:
        code = proc.wait()
    except BaseException:
        procs.terminate(proc.pid, grace, exited=procs.waiter(proc))
        raise
    if code != 0:
        raise VenvBuildError(f"`{' '.join(argv)}` exited with code {code} (its output is in the task log)")


def _relocate_scripts(tmp: str, final: str) -> None:
    """Point the scripts' ``#!`` lines (pip's console scripts) at the folder's final name."""
    bindir = os.path.join(tmp, "bin")
    for name in os.listdir(bindir):
        path = os.path.join(bindir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            head = fh.read(2)
            if head != b"#!":
                continue
            data = head + fh.read()
        with open(path, "wb") as fh:
            fh.write(data.replace(tmp.encode(), final.encode()))
