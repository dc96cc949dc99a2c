"""Tests for nbflow/tasks/nbrun.py: one notebook attempt on a real ipykernel.

Fault tests (timeouts, killed kernels, kernels that cannot start) are marked ``faults``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from nbflow.exceptions import NotebookNotFoundError
from nbflow.record import AttemptRecord
from nbflow.tasks.nbrun import CONTEXT_TAG, run_notebook

NB = Path(__file__).parent / "notebooks"
pytestmark = pytest.mark.timeout(60)


def _run(name: str, tmp_path: Path, **kw) -> AttemptRecord:
    kw.setdefault("log_path", str(tmp_path / f"{name}.log"))
    kw.setdefault("startup_timeout", 30)
    return run_notebook(str(NB / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"), **kw)


def _gone(pid: int | None) -> bool:
    """No live process with that pid (a zombie waiting for a container's init counts as gone)."""
    if pid is None or not psutil.pid_exists(pid):
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cells(outcome: AttemptRecord) -> list:
    return nbformat.read(outcome.output_uri, as_version=4).cells


def _tagged(cells, tag):
    return [c for c in cells if tag in c.metadata.get("tags", [])]


def _status(cell):
    return cell.metadata.get("papermill", {}).get("status")


def _assert_nbflow_marks(outcome: AttemptRecord, failing_source: str, words: str):
    """Banner on top, marker right before the failing cell, later cells not completed."""
    cells = _cells(outcome)
    banner = cells[0]
    assert "nbflow-error-banner" in banner.metadata["tags"]
    assert words in banner.source and "#nbflow-error-cell" in banner.source
    idx = next(i for i, c in enumerate(cells) if c.source == failing_source)
    marker = cells[idx - 1]
    assert "nbflow-error-marker" in marker.metadata["tags"]
    assert 'id="nbflow-error-cell"' in marker.source
    failing = cells[idx]
    assert _status(failing) == "failed"
    assert any(o.output_type == "error" for o in failing.outputs)
    later = cells[idx + 1 :]
    assert later, "the test notebooks have cells after the failing one"
    for cell in later:
        assert _status(cell) == "pending"
        assert cell.metadata["papermill"].get("end_time") is None
    nb = nbformat.read(outcome.output_uri, as_version=4)
    assert nb.metadata["nbflow"]["reason"] == outcome.reason
    return cells


# ----------------------------------------------------------------------------- success


def test_success_with_parameters_context_and_log(tmp_path):
    outcome = _run(
        "uses_context",
        tmp_path,
        parameters={"x": 7},
        context_source='nbflow_ctx = {"run_id": "r1"}',
        timeout=30,
    )
    assert outcome.ok and outcome.reason is None and outcome.message == "notebook completed"
    assert outcome.cell_index is None and outcome.ename is None
    assert outcome.duration > 0 and outcome.kernel_pid and _gone(outcome.kernel_pid)
    cells = _cells(outcome)
    tags = [c.metadata.get("tags", []) for c in cells]
    # parameters cell, papermill's injected cell, then user code: the context ran silently
    # before them (no cell, no In [n] of its own) and is kept in the notebook's metadata
    assert tags == [["parameters"], ["injected-parameters"], []]
    assert [c.execution_count for c in cells] == [1, 2, 3]
    assert "x = 7" in cells[1].source
    assert cells[2].outputs[0]["text"] == "ctx r1 7\n"
    assert (
        nbformat.read(outcome.output_uri, as_version=4).metadata["nbflow"]["context"] == 'nbflow_ctx = {"run_id": "r1"}'
    )
    log = Path(tmp_path / "uses_context.log").read_text()
    assert f"nbflow: executing {NB / 'uses_context.ipynb'} with parameters" in log
    assert json.dumps({"x": 7}) in log
    assert "ctx r1 7" in log and "nbflow: succeeded" in log


def test_context_runs_first_without_parameters_cell_and_cwd_is_used(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    seen = tmp_path / "context-ran-in.txt"
    outcome = _run(
        "no_params",
        tmp_path,
        cwd=str(workdir),
        context_source=f"import os\nopen({str(seen)!r}, 'w').write(os.getcwd())",
    )
    assert outcome.ok
    cells = _cells(outcome)
    assert not any(CONTEXT_TAG in c.metadata.get("tags", []) for c in cells)
    assert seen.read_text() == str(workdir)
    assert "no params here" in (tmp_path / "no_params.log").read_text()


def test_sys_exit_zero_is_success_stopped_early(tmp_path):
    outcome = _run("sysexit0", tmp_path)
    assert outcome.ok and outcome.reason == "stopped_early"
    assert "sys.exit(0) in Cell 2/3" in outcome.message
    assert "never printed" not in (tmp_path / "sysexit0.log").read_text()


def test_missing_or_unreadable_input_is_a_programmer_error(tmp_path):
    with pytest.raises(NotebookNotFoundError, match="nope.ipynb"):
        run_notebook(str(tmp_path / "nope.ipynb"), str(tmp_path / "out.ipynb"))
    bad = tmp_path / "bad.ipynb"
    bad.write_text("this is not json")
    with pytest.raises(Exception, match="JSON"):
        run_notebook(str(bad), str(tmp_path / "out.ipynb"))


# ----------------------------------------------------------------------------- cell errors


def test_cell_error_reports_source_cell_and_keeps_papermill_banner(tmp_path):
    outcome = _run(
        "raises",
        tmp_path,
        parameters={"alpha": 0.3},
        context_source="ctx = 1",
        log_path=None,  # logging is optional
    )
    assert not outcome.ok and outcome.reason == "cell_error"
    # executed notebook: parameters, injected, print, raise -> source index 2
    assert outcome.cell_index == 2
    assert outcome.exec_count == 4  # parameters, injected, print ran before it (the context: silently)
    assert outcome.ename == "ValueError" and outcome.evalue == "bad alpha 0.3"
    assert outcome.message == "Cell 3/4 raised ValueError: bad alpha 0.3"  # as JupyterLab's status bar
    assert "ValueError" in outcome.traceback and "\x1b[" not in outcome.traceback
    assert _gone(outcome.kernel_pid)
    cells = _cells(outcome)
    assert "An Exception was encountered" in cells[0].source  # papermill's banner
    anchor = next(i for i, c in enumerate(cells) if 'id="papermill-error-cell"' in c.source)
    assert "raise ValueError" in cells[anchor + 1].source
    assert _status(cells[-1]) != "completed"


def test_cell_error_traceback_goes_to_log(tmp_path):
    outcome = _run("raises", tmp_path, log_path=str(tmp_path / "logs" / "raises.log"))
    log = (tmp_path / "logs" / "raises.log").read_text()
    assert "before the error" in log and "never printed" not in log
    assert "nbflow: failed: Cell 3/4 raised ValueError: bad alpha 0.5" in log
    assert "ValueError" in log.split("nbflow: failed")[1]
    assert outcome.cell_index == 2  # no injected cells this time: same source index


def test_failnow_is_a_cell_error_with_its_name(tmp_path):
    # Braces in paths are literal for nbflow (papermill would read them as a path template).
    out = tmp_path / "{region}" / "out.ipynb"
    outcome = run_notebook(str(NB / "failnow.ipynb"), str(out))
    assert outcome.reason == "cell_error" and outcome.ename == "FailNow"
    assert outcome.cell_index == 0 and "retrying will not help" in outcome.evalue
    assert outcome.output_uri == str(out) and out.is_file()


# ----------------------------------------------------------------------------- faults


@pytest.mark.faults
def test_cell_timeout_marks_cell_and_shuts_kernel_down(tmp_path):
    started = time.monotonic()
    outcome = _run("sleeps", tmp_path, cell_timeout=1.5)
    assert time.monotonic() - started < 15
    assert outcome.reason == "cell_timeout" and outcome.ename == "CellTimeoutError"
    assert outcome.cell_index == 2 and outcome.message == "Cell 3/5 exceeded cell_timeout=1.5s"
    assert _gone(outcome.kernel_pid)
    _assert_nbflow_marks(outcome, "import time\ntime.sleep(seconds)", "A cell timed out")
    assert "before sleep" in (tmp_path / "sleeps.log").read_text()


@pytest.mark.faults
def test_task_timeout_kills_kernel_within_bounds(tmp_path):
    started = time.monotonic()
    outcome = _run("many_short_cells", tmp_path, timeout=2, kill_grace=1)
    elapsed = time.monotonic() - started
    assert outcome.reason == "task_timeout" and outcome.ename == "TaskTimeout"
    assert 2 <= elapsed <= 2 + 1 + 5
    assert outcome.message.startswith("task exceeded timeout=2s during Cell ")
    assert outcome.message.endswith("; kernel killed")
    assert outcome.cell_index is not None and 1 <= outcome.cell_index < 40
    assert _gone(outcome.kernel_pid)
    cells = _cells(outcome)
    failing_source = next(c.source for c in cells if _status(c) == "failed")
    _assert_nbflow_marks(outcome, failing_source, "The task timed out")
    # cells before the failing one ran and kept their outputs
    ran = [c for c in cells if c.cell_type == "code" and _status(c) == "completed"]
    assert ran and all(c.outputs or c.source == "import time" for c in ran)


@pytest.mark.faults
def test_task_timeout_escalates_to_sigkill_for_the_whole_group(tmp_path):
    started = time.monotonic()
    outcome = _run("ignores_sigterm", tmp_path, timeout=2, kill_grace=1)
    elapsed = time.monotonic() - started
    assert outcome.reason == "task_timeout" and outcome.cell_index == 1
    assert 3 <= elapsed <= 2 + 1 + 6  # SIGTERM ignored: SIGKILL after the grace
    child = int(re.search(r"child pid (\d+)", (tmp_path / "ignores_sigterm.log").read_text())[1])
    assert _gone(outcome.kernel_pid) and _gone(child)
    _assert_nbflow_marks(outcome, "time.sleep(60)", "The task timed out")


@pytest.mark.faults
def test_kernel_died_reports_signal_and_cell(tmp_path):
    outcome = _run("kills_kernel", tmp_path, timeout=30)
    assert outcome.reason == "kernel_died" and outcome.ename == "DeadKernelError"
    assert outcome.cell_index == 2
    assert outcome.message == "kernel died during Cell 3/4 (signal SIGKILL)"
    assert _gone(outcome.kernel_pid)
    cells = _assert_nbflow_marks(outcome, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "The kernel died")
    assert cells[1].outputs[0]["text"] == "about to die\n"  # partial outputs kept


@pytest.fixture
def bad_kernels(tmp_path, monkeypatch):
    """Kernelspecs 'broken' (exits at once) and 'mute' (never answers) on JUPYTER_PATH."""
    for name, argv in {"broken": ["/bin/false"], "mute": ["sleep", "60"]}.items():
        spec = tmp_path / "jupyter" / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))


@pytest.mark.faults
def test_kernel_that_cannot_start(tmp_path, bad_kernels):
    started = time.monotonic()
    outcome = _run("no_params", tmp_path, kernel_name="broken", startup_timeout=5)
    assert time.monotonic() - started < 5 + 5
    assert outcome.reason == "kernel_start_failed"
    assert "kernel 'broken' failed to start" in outcome.message
    assert "/bin/false" in outcome.message and "exit code 1" in outcome.message
    assert outcome.cell_index is None and _gone(outcome.kernel_pid)
    cells = _cells(outcome)
    assert "nbflow-error-banner" in cells[0].metadata["tags"]
    assert "The kernel failed to start" in cells[0].source
    assert all(_status(c) == "pending" for c in cells[1:])


@pytest.mark.faults
def test_kernel_that_never_answers_is_stopped_after_startup_timeout(tmp_path, bad_kernels):
    started = time.monotonic()
    outcome = _run("no_params", tmp_path, kernel_name="mute", startup_timeout=2)
    assert time.monotonic() - started < 2 + 5
    assert outcome.reason == "kernel_start_failed"
    assert "kernel 'mute' failed to start" in outcome.message and "sleep 60" in outcome.message
    assert "didn't respond in 2 seconds" in outcome.message
    assert _gone(outcome.kernel_pid)


@pytest.mark.faults
def test_task_timeout_while_the_kernel_starts(tmp_path, bad_kernels):
    started = time.monotonic()
    outcome = _run("no_params", tmp_path, kernel_name="mute", timeout=1.5, kill_grace=1)
    assert time.monotonic() - started < 1.5 + 1 + 5
    assert outcome.reason == "task_timeout" and outcome.cell_index is None
    assert outcome.message == "task exceeded timeout=1.5s; kernel killed"
    assert _gone(outcome.kernel_pid)
    cells = _cells(outcome)
    assert "The task timed out" in cells[0].source
    assert all(_status(c) == "pending" for c in cells[1:])


@pytest.mark.faults
def test_unknown_or_missing_kernel_fails_fast_with_output_written(tmp_path):
    outcome = _run("unknown_kernel", tmp_path)
    assert outcome.reason == "kernel_start_failed" and outcome.kernel_pid is None
    assert "kernel 'py99' failed to start" in outcome.message and outcome.duration < 10
    assert Path(outcome.output_uri).is_file()
    outcome = _run("no_kernelspec", tmp_path)
    assert outcome.reason == "kernel_start_failed"
    assert outcome.message.startswith("no kernel to start: No kernel name found")
    cells = _cells(outcome)
    assert "nbflow-error-banner" in cells[0].metadata["tags"] and len(cells) == 3


def test_two_notebooks_in_two_threads_keep_their_own_kernels(tmp_path):
    results: dict[str, AttemptRecord] = {}

    def go(key: str, name: str, **kw) -> None:
        results[key] = run_notebook(
            str(NB / f"{name}.ipynb"),
            str(tmp_path / f"{key}.ipynb"),
            log_path=str(tmp_path / f"{key}.log"),
            **kw,
        )

    threads = [
        threading.Thread(target=go, args=("a", "params_ok"), kwargs={"parameters": {"name": "A"}}),
        threading.Thread(target=go, args=("b", "raises"), kwargs={"parameters": {"alpha": 9.0}}),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    a, b = results["a"], results["b"]
    assert a.ok and b.reason == "cell_error" and b.evalue == "bad alpha 9.0"
    assert a.kernel_pid != b.kernel_pid and _gone(a.kernel_pid) and _gone(b.kernel_pid)
    assert "hello A" in (tmp_path / "a.log").read_text()
    assert "hello A" not in (tmp_path / "b.log").read_text()
