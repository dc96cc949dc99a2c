"""Shared fixtures: an isolated NBFLOW_HOME per test, PostgreSQL when reachable, pipeline files."""

from __future__ import annotations

import os
import socket
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow import api

NOTEBOOKS = Path(__file__).parent / "notebooks"
PG_URL = os.environ.get("NBFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _reset() -> None:
    api.reset()  # settings, stores and engines: the next test reads its NBFLOW_* afresh


@pytest.fixture
def nbflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh NBFLOW_HOME (SQLite database and artifact root) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("NBFLOW_HOME", str(home))
    for var in ("NBFLOW_DB_URL", "NBFLOW_ARTIFACT_ROOT", "NBFLOW_EXECUTOR", "NBFLOW_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NBFLOW_KILL_GRACE", "2")
    _reset()
    yield home
    _reset()


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch, nbflow_home: Path) -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema of its own; skips when no server is reachable."""
    if not _pg_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (start it: pg_ctlcluster ... main start)")
    import sqlalchemy as sa

    schema = f"nbflow_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("NBFLOW_DB_URL", url)
    _reset()
    yield url
    _reset()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write a pipeline file (dedented source) into a fresh folder and return its path."""

    def write(source: str, name: str = "pipeline.py", folder: str = "pipelines") -> Path:
        path = tmp_path / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    return write


def make_notebook(path: Path, cells: list, metadata: dict | None = None) -> Path:
    """Write a python3 notebook; each cell is its source or ``(source, [tags])``.

    A one-line source starting with ``# `` becomes a markdown heading, any other a code cell.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb_cells = []
    for cell in cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        if source.startswith("# ") and "\n" not in source:
            nb_cells.append(new_markdown_cell(source))
            continue
        nb_cells.append(new_code_cell(textwrap.dedent(source).strip("\n")))
        if tags:
            nb_cells[-1].metadata["tags"] = list(tags)
    spec = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=nb_cells, metadata={**spec, **(metadata or {})}), str(path))
    return path


def kernel_pids() -> set[int]:
    """This test's ipykernel processes alive now, except fresh kernels held by a live kernel pool.

    A kernel is this test's when its environment has this test's ``NBFLOW_HOME`` (kernels inherit
    it from the workers that start them): the machine is shared, and other sessions start and
    stop kernels of their own while a test runs (a machine-wide count saw those as leftovers).
    A pooled kernel waits in its pool's folder (``kernelpool.POOL_DIR_PREFIX``) until it is
    taken, as a child of the (Python) process whose pool holds it; it belongs to that process
    (a worker, or this test process on ``inline``), not to any attempt. One whose parent is gone
    (reparented to init or a subreaper, which is no Python process) is a leak and is counted. A
    worker's kernel zygote, which forks its pooled kernels, belongs to its worker in the same way.
    """
    import psutil

    from nbflow.tasks import kernelpool, zygote

    home = os.environ.get("NBFLOW_HOME")
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if "ipykernel" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            if home is None or proc.environ().get("NBFLOW_HOME") != home:
                continue  # another test's or session's kernel
        except psutil.Error:  # gone meanwhile
            continue
        try:
            parent = proc.parent()
            cmdline = proc.info["cmdline"] or []
            # a worker's kernel zygote (nbflow.tasks.zygote) is no kernel but lives as long as its
            # worker, like a pooled kernel; the kernels it forks share its command line
            is_zygote = cmdline[1:3] == ["-c", zygote.SERVER] and parent is not None and parent.cmdline() != cmdline
            held = (
                (is_zygote or kernelpool.POOL_DIR_PREFIX in proc.cwd())
                and parent is not None
                and parent.pid != 1
                and "python" in os.path.basename(parent.exe())
            )
        except psutil.Error:  # gone meanwhile, or a zombie: not a live kernel held by a pool
            held = not pid_alive(proc.pid)
        if not held:
            found.add(proc.pid)
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
