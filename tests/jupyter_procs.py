"""A real `jupyter server` / `jupyter lab` subprocess for the server-API and browser tests.

The root folder holds a DAG folder (``pipelines/``) and NBFLOW_HOME (``home/``; output
notebooks open through nbflow's read-only drive, hidden home or not, see
``test_server_api.py`` for a hidden one); pipelines are registered by a short
`nbflow scheduler --loops` run before the server starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.openapi_check import check_answer

TOKEN = "nbflow-test-token"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nbflow_env(root: Path, executor: str = "inline", *, managed: bool = False) -> dict[str, str]:
    """Environment of the server and the helpers: NBFLOW_HOME inside ``root``; the managed
    scheduler off unless ``managed`` (a test of it stops the scheduler: :func:`stop_schedulers`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env.update(
        NBFLOW_HOME=str(root / "home"),
        NBFLOW_EXECUTOR=executor,
        NBFLOW_DAGS_FOLDER=str(root / "pipelines"),
        NBFLOW_KILL_GRACE="2",
        NBFLOW_MANAGE_SCHEDULER="1" if managed else "0",
    )
    return env


def schedulers_of(root: Path) -> list[int]:
    """Pids of the `nbflow scheduler` processes serving the DAG folder ``root/pipelines``."""
    folder = str(root / "pipelines")
    return [p.pid for p in _nbflow_processes() if "scheduler" in p.info["cmdline"] and folder in p.info["cmdline"]]


def stop_nbflow_processes(root: Path) -> None:
    """Terminate (then kill) the schedulers of ``root`` and the background drivers started in it
    (the managed scheduler and `nbflow drive` outlive the server on purpose)."""
    import psutil

    procs = []
    for proc in _nbflow_processes():
        try:
            mine = proc.pid in schedulers_of(root) or ("drive" in proc.info["cmdline"] and Path(proc.cwd()) == root)
        except psutil.Error:
            continue
        if mine:
            procs.append(proc)
    for proc in procs:
        proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        proc.kill()


def _nbflow_processes() -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if "nbflow" in (p.info["cmdline"] or [])[:3]]


REGISTER = """
import sys
from nbflow.scheduler import Scheduler
s = Scheduler(dags_folder=sys.argv[1], executor="inline")
s.loader.load()
s.sync_pipelines()
"""


def register_pipelines(root: Path, env: dict[str, str]) -> None:
    """Parse the DAG folder once, as the scheduler does (pipelines and import errors into the
    database), without creating scheduled runs."""
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(root / "pipelines")],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class JupyterProc:
    """A running Jupyter server with the nbflow extension."""

    url: str
    proc: subprocess.Popen
    root: Path
    log: Path
    token: str = TOKEN
    extra: dict[str, Any] = field(default_factory=dict)
    #: check every answer against docs/openapi.yaml (tests/openapi_check.py)
    check_openapi: bool = True

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """Call ``/nbflow/api/<path>``; returns (status, parsed JSON or text), after checking the
        answer against docs/openapi.yaml."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if method == "POST" and data is None:
            data = b"{}"
        req = urllib.request.Request(
            f"{self.url}nbflow/api/{path}", data=data, method=method, headers=dict(headers or {})
        )
        if token:
            req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, text = resp.status, resp.read().decode()
                kind = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, text, kind = exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")
        answer = json.loads(text) if "json" in kind and text else text
        if self.check_openapi:
            check_answer(method, path, status, kind, answer)
        return status, answer

    def stop(self) -> None:
        """Terminate the server (then kill it)."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


#: this tree's build of the JupyterLab extension (``cd extension && jlpm build``)
TREE_LABEXTENSION = Path(__file__).parent.parent / "nbflow" / "labextension"


def with_tree_labextension(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` with a ``JUPYTER_PATH`` that makes JupyterLab load this tree's build of the
    extension (``folder/labextensions/nbflow-jupyterlab`` links it; JupyterLab takes the first
    extension of a name it finds, and ``JUPYTER_PATH`` comes before the environment's copy,
    which an editable install made of whatever tree was installed). Unchanged without a build."""
    if not (TREE_LABEXTENSION / "package.json").exists():
        return env
    (folder / "labextensions").mkdir(parents=True, exist_ok=True)
    link = folder / "labextensions" / "nbflow-jupyterlab"
    if not link.exists():
        link.symlink_to(TREE_LABEXTENSION.resolve())
    paths = [str(folder), *([env["JUPYTER_PATH"]] if env.get("JUPYTER_PATH") else [])]
    return {**env, "JUPYTER_PATH": os.pathsep.join(paths)}


def start_jupyter(
    root: Path,
    env: dict[str, str],
    app: str = "server",
    timeout: float = 90,
    extra_args: tuple[str, ...] = (),
    up: tuple[int, ...] = (200, 503),
) -> JupyterProc:
    """Start ``jupyter <app>`` on 127.0.0.1 with the token, rooted at ``root``; wait until it answers.

    It is up when ``GET /nbflow/api/health`` with the token answers one of the ``up`` statuses.
    """
    port = free_port()
    log = root.parent / f"jupyter-{app}-{port}.log"
    args = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--ip",
        "127.0.0.1",
        f"--port={port}",
        "--allow-root",
        f"--ServerApp.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
    ]
    args += list(extra_args)
    if app == "lab":
        env = with_tree_labextension(env, root.parent / f"jupyter-path-{port}")
    if app == "lab":  # a workspace of its own: no tabs restored from another test's JupyterLab
        args += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.workspaces_dir={root.parent / f'workspaces-{port}'}",
        ]
    out = open(log, "wb")
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = JupyterProc(f"http://127.0.0.1:{port}/", proc, root, log)
    probe = JupyterProc(server.url, proc, root, log, check_openapi=False)  # the first answers may be the server's own
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                status, _ = probe.request("GET", "health")
                if status in up:
                    return server
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"jupyter {app} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")
    except BaseException:  # never leave a server behind (it outlives pytest: it has a session of its own)
        server.stop()
        raise
