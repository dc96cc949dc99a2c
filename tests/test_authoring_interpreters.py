"""Issue 16, items 6 and 7: ``@task(python=...)`` / ``@task(requirements=[...])`` (another
interpreter, a cached virtualenv: nbflow/tasks/external.py, nbflow/tasks/venvs.py) and
papermill's options of ``notebook(...)``: ``cwd=``, ``report_mode=``, ``export="html"``,
``handle.output_notebook``, and no extra nbflow-context cell (nbflow/tasks/nbexport.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import papermill
import pytest

from nbflow import api
from nbflow.exceptions import DefinitionError
from nbflow.loader import load_pipeline
from tests.conftest import make_notebook
from tests.jupyter_procs import JupyterProc, nbflow_env, start_jupyter
from tests.lab_browser import CHROMIUM, lab_page, shot


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter without nbflow, cloudpickle or pip: a venv made with ``--without-pip``."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = str(folder / "bin" / "python")
    assert subprocess.run([python, "-c", "import cloudpickle"], capture_output=True).returncode != 0
    return python


def _attempts(run_id: int) -> dict[str, dict]:
    return {a["task_id"]: a for a in api.run_details(run_id)["attempts"]}


def _run(path: Path):
    return _run_loaded(load_pipeline(path))


def _run_loaded(pipeline):
    return api.run_pipeline(pipeline, executor="inline")


# --- item 6: other interpreters ---------------------------------------------------------------

OTHER = """
from nbflow import Pipeline, task

with Pipeline("other") as pipeline:
    @task
    def make():
        return {"n": 21, "names": ["a", "b"]}

    @task(python=PYTHON)
    def elsewhere(data, scale=2):
        import sys
        print("running in", sys.executable)
        return {"exe": sys.executable, "n": data["n"] * scale, "names": data["names"]}

    @task(python=PYTHON)
    def boom(data):
        x = data["n"]
        raise ValueError(f"bad n {x}")  # line 18

    @task(python=PYTHON)
    def gives_a_set():
        return {1, 2}

    @task
    def make_a_set():
        return {1, 2}

    @task(python=PYTHON)
    def takes(values):
        return len(values)

    d = make()
    elsewhere(d, scale=3)
    boom(d)
    gives_a_set()
    takes(make_a_set())
"""


def test_python_task_runs_in_another_interpreter_over_json(nbflow_home, write_pipeline, bare_python):
    path = write_pipeline(OTHER.replace("PYTHON", repr(bare_python)))
    pipeline = load_pipeline(path)
    path.rename(path.with_suffix(".moved"))  # the source was read when defined (a worker may lack the file)
    result = _run_loaded(pipeline)
    attempts = _attempts(result.run_id)
    assert attempts["elsewhere"]["state"] == "success", attempts["elsewhere"]
    value = api.load_output(result.run_id, "elsewhere")
    assert value == {"exe": bare_python, "n": 63, "names": ["a", "b"]}
    log = api.read_log(result.run_id, "elsewhere")
    assert f"calling elsewhere in {bare_python}" in log and "as json" in log
    assert f"running in {bare_python}" in log  # the function's own output reaches the task log

    # the function raising in the other interpreter: its exception and traceback are the task's error
    boom = attempts["boom"]
    assert boom["state"] == "failed" and boom["ename"] == "ValueError" and boom["evalue"] == "bad n 21"
    assert f'File "{path}", line 18, in boom' in boom["traceback"], boom["traceback"]
    assert 'raise ValueError(f"bad n {x}")' in boom["traceback"]

    # values that cannot cross as JSON: named with the task, the value's type and the fix
    back = attempts["gives_a_set"]
    assert back["state"] == "failed" and back["ename"] == "CannotCross"
    assert "task 'gives_a_set'" in back["message"] and "builtins.set" in back["message"], back["message"]
    assert "return JSON values" in back["message"]
    there = attempts["takes"]
    assert there["state"] == "failed" and there["ename"] == "CannotCross"
    assert "task 'takes'" in there["message"] and "argument 1 of type builtins.set" in there["message"]
    assert "no cloudpickle there" in there["message"] and "install cloudpickle" in there["message"]


PICKLED = """
import datetime
from nbflow import Pipeline, task

OFFSET = datetime.timedelta(days=1)

def helper(d):
    return d + OFFSET

with Pipeline("pickled") as pipeline:
    @task
    def make():
        return {datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)}

    @task(python=PYTHON)
    def later(days):
        import os
        return os.getpid(), sorted(helper(d) for d in days)

    later(make())
"""


def test_same_python_with_cloudpickle_passes_any_value_and_module_helpers(nbflow_home, write_pipeline):
    # the worker's own interpreter has cloudpickle and the same version: the pickle transport
    path = write_pipeline(PICKLED.replace("PYTHON", repr(sys.executable)))
    result = _run(path)
    assert _attempts(result.run_id)["later"]["state"] == "success", _attempts(result.run_id)["later"]
    pid, days = api.load_output(result.run_id, "later")
    import datetime

    assert pid != os.getpid() and days == [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3)]
    assert "as pickle" in api.read_log(result.run_id, "later")


TIMEOUT = """
from nbflow import Pipeline, task

with Pipeline("slow_elsewhere") as pipeline:
    @task(python=PYTHON, timeout=1)
    def slow():
        import os, time
        open(PIDFILE, "w").write(str(os.getpid()))
        time.sleep(60)

    slow()
"""


def test_timeout_kills_the_other_interpreters_process(nbflow_home, write_pipeline, bare_python, tmp_path):
    pidfile = tmp_path / "pid"
    path = write_pipeline(TIMEOUT.replace("PYTHON", repr(bare_python)).replace("PIDFILE", repr(str(pidfile))))
    result = _run(path)
    attempt = _attempts(result.run_id)["slow"]
    assert attempt["state"] == "failed" and attempt["reason"] == "task_timeout", attempt
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancel_kills_the_other_interpreters_process(nbflow_home, write_pipeline, bare_python, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_CANCEL_POLL", "0.3")
    api.reset()
    pidfile = tmp_path / "pid"
    source = TIMEOUT.replace("PYTHON", repr(bare_python)).replace("PIDFILE", repr(str(pidfile)))
    pipeline = load_pipeline(write_pipeline(source.replace(", timeout=1", "")))
    results = []
    driver = threading.Thread(target=lambda: results.append(_run_loaded(pipeline)), daemon=True)
    driver.start()
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # (the pid is written: the call runs)
    pid = int(pidfile.read_text())
    (run,) = api.list_runs("slow_elsewhere")
    api.cancel_run(run["id"])
    driver.join(30)  # not the 60 s the function sleeps
    assert not driver.is_alive() and results[0].state.value == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


REQUIREMENTS = """
from nbflow import Pipeline, task

with Pipeline("venv_task") as pipeline:
    @task(requirements=["six==1.17.0"])
    def uses_six():
        import sys
        import six
        return {"six": six.__version__, "prefix": sys.prefix}

    uses_six()
"""


def test_requirements_task_builds_a_cached_virtualenv_and_reuses_it(nbflow_home, write_pipeline, tmp_path, monkeypatch):
    cache = tmp_path / "venvs"
    monkeypatch.setenv("NBFLOW_VENV_CACHE", str(cache))
    api.reset()
    path = write_pipeline(REQUIREMENTS)
    first = _run(path)
    value = api.load_output(first.run_id, "uses_six")
    assert value["six"] == "1.17.0" and Path(value["prefix"]).parent == cache, value
    log = api.read_log(first.run_id, "uses_six")
    assert "building a virtualenv" in log and "six==1.17.0" in log and "virtualenv ready in" in log, log
    built = Path(value["prefix"])
    assert (built / "nbflow-venv.json").is_file()
    made = built.stat().st_ino, (built / "nbflow-venv.json").stat().st_mtime_ns

    second = _run(path)
    again = api.load_output(second.run_id, "uses_six")
    assert again == value
    log2 = api.read_log(second.run_id, "uses_six")
    assert "reusing the cached virtualenv" in log2 and "building" not in log2, log2
    assert (built.stat().st_ino, (built / "nbflow-venv.json").stat().st_mtime_ns) == made  # not rebuilt
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == [built.name]  # no leftovers


def test_bad_interpreter_options_are_definition_errors(nbflow_home, write_pipeline):
    both = """
    from nbflow import Pipeline, task
    with Pipeline("bad") as pipeline:
        @task(python="/usr/bin/python3", requirements=["six"])
        def f():
            return 1
        f()
    """
    with pytest.raises(DefinitionError, match="sets both python= and requirements="):
        load_pipeline(write_pipeline(both))
    as_string = both.replace('python="/usr/bin/python3", requirements=["six"]', 'requirements="six"')
    with pytest.raises(
        DefinitionError, match=r"(?s)requirements= must be a list.*hint: e.g. @task\(requirements=\[.scikit-learn"
    ):
        load_pipeline(write_pipeline(as_string, name="two.py"))
    missing = both.replace('python="/usr/bin/python3", requirements=["six"]', 'python="/nope/bin/python"')
    result = _run(write_pipeline(missing, name="three.py"))
    attempt = _attempts(result.run_id)["f"]
    assert attempt["state"] == "failed" and "task 'f': no Python interpreter at /nope/bin/python" in attempt["message"]


def test_a_lambda_cannot_cross_as_source(nbflow_home, write_pipeline, bare_python):
    path = write_pipeline(f"""
    from nbflow import Pipeline, task
    with Pipeline("lam") as pipeline:
        task(python={bare_python!r}, name="lam")(lambda: 1)()
    """)
    attempt = _attempts(_run(path).run_id)["lam"]
    assert attempt["state"] == "failed" and attempt["ename"] == "CannotCross", attempt
    assert "task 'lam'" in attempt["message"] and "define the function with def" in attempt["message"]


# --- item 7: papermill options of notebook() ----------------------------------------------------


def _notebook(folder: Path) -> Path:
    return make_notebook(
        folder / "report.ipynb",
        [
            ("x = 1", ["parameters"]),
            "import os, nbflow\nnbflow.save('cwd', os.getcwd())",
            "print('x is', x * 2)",
        ],
    )


def test_output_notebook_has_no_context_cell_and_papermills_numbering(nbflow_home, write_pipeline, tmp_path):
    path = write_pipeline("""
    from nbflow import Pipeline, notebook
    with Pipeline("plain") as pipeline:
        notebook("report.ipynb", parameters={"x": 3})
    """)
    source = _notebook(path.parent)
    result = _run(path)
    attempt = _attempts(result.run_id)["report"]
    assert attempt["state"] == "success", attempt
    assert api.load_output(result.run_id, "report") == {"cwd": str(path.parent)}  # nbflow.save still bound
    out = nbformat.read(attempt["output_uri"], as_version=4)
    assert not any("nbflow-context" in c.metadata.get("tags", []) for c in out.cells)
    assert not any("_nbflow.artifacts.bind" in c.source for c in out.cells)  # no internal paths in cells
    assert "artifacts.bind" in out.metadata["nbflow"]["context"]  # the context is in the metadata
    bare = tmp_path / "bare.ipynb"
    papermill.execute_notebook(str(source), str(bare), parameters={"x": 3}, progress_bar=False, kernel_name="python3")
    expected = [c.execution_count for c in nbformat.read(bare, as_version=4).cells]
    assert [c.execution_count for c in out.cells] == expected == [1, 2, 3, 4]


PAPERMILL_OPTIONS = """
from nbflow import Pipeline, notebook, task

with Pipeline("papermill_options") as pipeline:
    nb = notebook("report.ipynb", parameters={"x": 5}, cwd="data", report_mode=True, export="html")
    notebook("report.ipynb", name="plain", parameters={"x": 1})

    @task
    def read_it(path, values):
        import nbformat
        cells = nbformat.read(path, as_version=4).cells
        return {"path": path, "printed": cells[-1].outputs[0]["text"], "values": values}

    read_it(nb.output_notebook, nb)
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, JupyterProc]]:
    """PAPERMILL_OPTIONS run once by the real ``nbflow run`` (inline), then ``jupyter lab`` on its home."""
    root = tmp_path_factory.mktemp("papermill") / "root"
    env = nbflow_env(root)
    folder = root / "pipelines"
    (folder / "data").mkdir(parents=True)
    (folder / "pipeline.py").write_text(PAPERMILL_OPTIONS)
    _notebook(folder)
    res = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(folder / "pipeline.py"), "--executor", "inline"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    proc = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    yield root, proc
    proc.stop()


def test_cwd_report_mode_export_and_output_notebook_by_cli_and_rest(lab):
    root, proc = lab
    folder = root / "pipelines"
    attempt = root / "home" / "runs" / "papermill_options" / "run-1" / "report" / "try-1"
    output = attempt / "output.ipynb"
    out = nbformat.read(output, as_version=4)
    # report_mode: every code cell's source hidden, as papermill does
    assert all(c.metadata["jupyter"]["source_hidden"] for c in out.cells if c.cell_type == "code")
    html = (attempt / "output.html").read_text()  # export="html": beside output.ipynb
    assert "x is 10" in html and "nbflow.save" not in html  # outputs kept, inputs left out in report mode

    status, details = proc.request("GET", "runs/1")
    assert status == 200
    tries = {a["task_id"]: a for a in details["attempts"]}
    assert tries["report"]["html_export"] is True
    assert tries["plain"]["html_export"] is False and tries["read_it"]["html_export"] is False
    status, page = proc.request("GET", "runs/1/tasks/report/export.html")
    assert status == 200 and page == html
    status, answer = proc.request("GET", "runs/1/tasks/plain/export.html")
    assert status == 404 and "try 1 of task 'plain' of run 1 has no HTML export" in answer["message"]
    assert 'export="html"' in answer["hint"]
    status, answer = proc.request("GET", "runs/1/tasks/read_it/export.html")
    assert status == 404 and "has no output notebook" in answer["message"]
    # the downstream task received the output notebook's path (and the notebook's values without it)
    value = next(a for a in details["artifacts"] if a["task_id"] == "read_it")
    received = json.loads((root / value["uri"]).read_text())  # (answers name files relative to the root)
    assert received == {"path": str(output), "printed": "x is 10\n", "values": {"cwd": str(folder / "data")}}


@pytest.mark.browser
def test_task_pane_links_the_html_export(lab):
    root, proc = lab
    assert CHROMIUM.exists(), "Debian chromium is needed at /usr/bin/chromium (apt-get install chromium)"
    with lab_page(proc.url, proc.token) as pg:
        pg.evaluate(
            "([c, a]) => window.jupyterapp.commands.execute(c, a).then(() => null)",
            ["nbflow:open-dag", {"name": "papermill_options", "run": 1}],
        )
        view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
        view.locator('.nbflow-view-tab[data-view="graph"]').click()
        view.locator("#task-plain").click()
        view.locator(".nbflow-task-pane .nbflow-open-output").wait_for(timeout=60_000)
        assert view.locator(".nbflow-task-pane .nbflow-exported-html").count() == 0  # no export="html"
        view.locator("#task-report").click()
        link = view.locator(".nbflow-task-pane .nbflow-exported-html")
        link.wait_for(timeout=60_000)
        shot(pg, "interpreters-html-export-link")
        with pg.expect_download(timeout=60_000) as download:
            link.click()
        attempt = root / "home" / "runs" / "papermill_options" / "run-1" / "report" / "try-1"
        assert Path(download.value.path()).read_text() == (attempt / "output.html").read_text()
        assert download.value.suggested_filename == "papermill_options-run1-report-try1.html"


def test_two_workers_asking_for_one_virtualenv_build_it_once(tmp_path):
    from nbflow.tasks.venvs import ensure_venv

    logs = [tmp_path / "log-1.txt", tmp_path / "log-2.txt"]
    pythons: list[str] = []

    def ask(log: Path) -> None:  # (a task log: the installer's output goes there too)
        with log.open("w") as fh:
            pythons.append(ensure_venv(["six==1.17.0"], str(tmp_path / "venvs"), log=fh))

    workers = [threading.Thread(target=ask, args=(log,)) for log in logs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert len(pythons) == 2 and pythons[0] == pythons[1], pythons
    texts = sorted((log.read_text() for log in logs), key=lambda t: "building a virtualenv" not in t)
    assert "building a virtualenv" in texts[0] and "virtualenv ready" in texts[0], texts
    assert "building a virtualenv" not in texts[1], texts  # built once
    assert "waiting for another worker building" in texts[1] and "another worker built" in texts[1], texts
    out = subprocess.run([pythons[0], "-c", "import six; print(six.__version__)"], capture_output=True, text=True)
    assert out.stdout.strip() == "1.17.0"


def test_venv_cache_setting(tmp_path):
    from nbflow.config import load_settings

    assert load_settings(cwd=tmp_path, environ={}).venv_cache == str(tmp_path / ".nbflow" / "venvs")
    assert load_settings(cwd=tmp_path, environ={"NBFLOW_VENV_CACHE": "envs"}).venv_cache == str(tmp_path / "envs")
