"""The worker side: attempts under a remote (URL) artifact root are staged locally and uploaded."""

from __future__ import annotations

from pathlib import Path

from nbflow import api
from nbflow.loader import load_pipeline
from tests.test_notebook_task import CHAIN, make_notebook


def test_url_artifact_root_stages_and_uploads_every_file(nbflow_home, write_pipeline, tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", f"file://{root}")
    api.reset()
    path = write_pipeline(CHAIN)
    make_notebook(
        path.parent / "consume.ipynb",
        "small = None\nblob = None\nalpha: float = 0.0",
        "import nbflow\nblob = nbflow.load(blob)\nprint('blob', len(blob))",
        "total = sum(small['k']) + len(blob) * alpha\nnbflow.save('total', total)\nnbflow.save('echo', small)",
    )
    result = api.run_pipeline(load_pipeline(path), params={"alpha": "2"}, executor="local")
    assert result.ok, [(t["task_id"], t["error"]) for t in result.tasks]
    assert api.load_output(result.run_id, "final") == {"total": 206.0, "names": ["echo", "total"]}
    row = result.task("consume")
    assert row["output_uri"].startswith(f"file://{root}/nbchain/run-{result.run_id}/consume/try-1/")
    assert (root / "nbchain" / f"run-{result.run_id}" / "consume" / "try-1" / "output.ipynb").is_file()
    assert "blob 100" in api.read_log(result.run_id, "consume")
    uris = [a["uri"] for a in api.run_details(result.run_id)["artifacts"]]
    assert uris and all(u.startswith(f"file://{root}/") for u in uris)
    assert not list(Path("/tmp").glob("nbflow-attempt-*")), "staging folders were left behind"


def test_a_process_an_attempt_starts_after_its_cancel_is_killed_too():
    """A cancel that reaches a worker while the attempt's kernel is still starting finds no
    process group to kill; the kernel registered a moment later must go too (it lived on,
    running the notebook, after the run was cancelled)."""
    import subprocess
    import sys

    from nbflow import worker

    key = "late-kernel-test"
    with worker._running_lock:
        worker._running[key] = set()
    try:
        assert worker.kill_attempt(key, 0.2)  # nothing to kill yet
        late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        worker._register(key, None)(late.pid)  # the kernel's process group, registered after the cancel
        assert late.wait(10) is not None
    finally:
        with worker._running_lock:
            worker._running.pop(key, None)
            worker._cancelled.pop(key, None)
        if late.poll() is None:
            late.kill()
