"""The deploy recipes (``deploy/``), checked statically: nothing here can start Docker or a
Kubernetes cluster. ``docker-compose config`` parses the compose file, ``kubectl kustomize``
renders the Kubernetes base and kubernetes-validate checks every object against the API
schemas; every ``NBFLOW_*`` setting the recipes pass is one nbflow reads, every ``nbflow``
command parses with nbflow's own parser, and the Dask and Jupyter options exist."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _compose() -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(
            "Debian's docker-compose is not installed (apt-get install docker-compose): the compose check needs it"
        )
    proc = subprocess.run(
        [exe, "--env-file", str(DEPLOY / ".env.example"), "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _kubernetes() -> list[dict[str, Any]]:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed: rendering deploy/kubernetes needs its built-in kustomize")
    proc = subprocess.run([exe, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        found += [(f"{obj['kind']}/{obj['metadata']['name']}", c) for c in spec.get("containers", [])]
    return found


def test_dockerfile_copies_files_that_exist_and_installs_with_the_tested_versions():
    text = DOCKERFILE.read_text()
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()}
    copies = re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M)
    assert copies, "the Dockerfile copies nothing from the repository"
    for line in copies:
        *sources, _dest = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which the repository does not have"
            assert source not in ignored, f"Dockerfile copies {source}, which .dockerignore leaves out"
    # the image is built with the versions CI tested, with extras pyproject.toml defines
    assert "-c /tmp/constraints.txt" in text
    extras = set(re.search(r"\[([a-z,]+)\]", text.split("pip install --no-cache-dir -c")[1]).group(1).split(","))
    defined = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert extras <= defined, f"unknown extras {extras - defined}"
    assert re.search(r"^FROM python:3\.11", text, flags=re.M)  # the version CI runs


def test_compose_file_parses_and_has_every_role():
    services = _compose()["services"]
    assert set(services) == {
        "postgres",
        "migrate",
        "scheduler-a",
        "scheduler-b",
        "dask-scheduler",
        "worker-default",
        "worker-gpu",
        "jupyterlab",
    }
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["command"] == ["nbflow", "db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("scheduler-a", "scheduler-b"):  # two schedulers: HA on the database's leases
        assert services[name]["command"] == ["nbflow", "scheduler"]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    queues = {
        name: s["command"][s["command"].index("--queue") + 1]
        for name, s in services.items()
        if "--queue" in s.get("command", [])
    }
    assert queues == {"worker-default": "default", "worker-gpu": "gpu"}
    # the secrets come from deploy/.env, never from the file
    assert "change-me" not in (DEPLOY / "compose.yaml").read_text()
    env = services["jupyterlab"]["environment"]
    assert env["NBFLOW_DB_URL"].startswith("postgresql+psycopg://nbflow:change-me@postgres:5432/")
    # every container that runs tasks mounts the shared artifact root and DAG folder at one path
    for name in ("scheduler-a", "worker-default", "worker-gpu", "jupyterlab"):
        targets = {v.split(":")[1] if isinstance(v, str) else v["target"] for v in services[name]["volumes"]}
        assert {services[name]["environment"]["NBFLOW_ARTIFACT_ROOT"], "/data/pipelines"} <= targets, name


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("Debian's docker-compose is not installed (apt-get install docker-compose)")
    empty = tmp_path / ".env"
    empty.write_text("")
    proc = subprocess.run(
        [exe, "--env-file", str(empty), "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "set POSTGRES_PASSWORD in deploy/.env" in proc.stderr


def test_kubernetes_base_renders_and_every_object_is_valid():
    import kubernetes_validate

    objects = _kubernetes()
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32", strict=True)  # raises on an invalid object
    by = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert by[("Deployment", "nbflow-scheduler")]["spec"]["replicas"] == 2
    job = by[("Job", "nbflow-db-upgrade")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["nbflow", "db", "upgrade"]
    workers = {name: o for (kind, name), o in by.items() if kind == "Deployment" and name.startswith("nbflow-worker-")}
    assert set(workers) == {"nbflow-worker-default", "nbflow-worker-gpu"}
    gpu = workers["nbflow-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and "gpu" in gpu["command"]
    assert by[("PersistentVolumeClaim", "nbflow-shared")]["spec"]["accessModes"] == ["ReadWriteMany"]
    # every Secret key and ConfigMap a container refers to is generated
    secrets = {k for (kind, _), o in by.items() if kind == "Secret" for k in o["data"]}
    configmaps = {name for kind, name in by if kind == "ConfigMap"}
    for where, container in _containers(objects):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets, f"{where} reads secret key {ref['key']}, which no Secret has"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps, where
    # workers get no database: everything comes with the work item
    for name, obj in workers.items():
        names = {e["name"] for c in obj["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        assert "NBFLOW_DB_URL" not in names, name


def _settings_nbflow_reads() -> set[str]:
    from nbflow.config import _ENV

    source = "\n".join(p.read_text() for p in (REPO / "nbflow").rglob("*.py"))
    return set(_ENV.values()) | set(re.findall(r"[\"'](NBFLOW_[A-Z_]+)[\"']", source))


def _commands() -> list[list[str]]:
    commands = [s["command"] for s in _compose()["services"].values() if "command" in s]
    commands += [c["command"] for _, c in _containers(_kubernetes()) if "command" in c]  # postgres: its image's own
    return commands


def test_every_setting_the_recipes_pass_is_one_nbflow_reads():
    known = _settings_nbflow_reads()
    passed: set[str] = set()
    for service in _compose()["services"].values():
        passed |= {k for k in service.get("environment", {}) if k.startswith("NBFLOW_")}
    for path in (DEPLOY / "kubernetes").glob("*"):
        passed |= set(re.findall(r"\b(NBFLOW_[A-Z_]+)\b", path.read_text()))
    passed |= set(re.findall(r"\b(NBFLOW_[A-Z_]+)=", DOCKERFILE.read_text()))
    assert passed, "the recipes pass no settings?"
    unknown = sorted(passed - known)
    assert not unknown, f"settings nbflow does not read: {unknown}"


def test_every_dask_setting_the_recipes_pass_is_one_dask_has():
    """``DASK_A__B_C`` is Dask's key ``a.b-c`` (dask.config's own reading of the environment);
    a misspelled one would be ignored without a word."""
    import dask.config
    import distributed  # noqa: F401 - loads distributed's defaults into dask.config

    texts = [path.read_text() for path in (DEPLOY / "kubernetes").glob("*")] + [(DEPLOY / "compose.yaml").read_text()]
    passed = {name for text in texts for name in re.findall(r"\b(DASK_[A-Z_]+)\b", text)}
    assert {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"} <= passed
    for name in passed:
        parsed = dask.config.collect_env({name: "1"})
        key = ".".join(_only_key(parsed))
        assert dask.config.get(key, default=KeyError) is not KeyError, f"{name}: Dask has no setting {key}"


def _only_key(tree: dict[str, Any]) -> list[str]:
    [(key, value)] = tree.items()
    return [key, *(_only_key(value) if isinstance(value, dict) else [])]


def test_every_command_the_recipes_run_parses():
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from jupyter_server.auth.identity import IdentityProvider
    from jupyter_server.serverapp import ServerApp

    from nbflow.cli import build_parser

    seen = set()
    for argv in _commands():
        if argv[0] == "nbflow":
            build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
            seen.add(" ".join(argv[:2]))
        elif argv[:2] == ["dask", "scheduler"]:
            dask_scheduler.make_context("dask scheduler", list(argv[2:]))  # click checks the options
            seen.add("dask scheduler")
        elif argv[:2] == ["jupyter", "lab"]:
            for arg in argv[2:]:
                match = re.match(r"--(\w+)\.(\w+)=", arg)
                if match:
                    cls = {"ServerApp": ServerApp, "IdentityProvider": IdentityProvider}[match.group(1)]
                    assert cls.class_traits(config=True).get(match.group(2)), arg
            seen.add("jupyter lab")
        else:
            pytest.fail(f"a recipe runs {shlex.join(argv)}, which this test does not know how to check")
    assert seen == {"nbflow db", "nbflow scheduler", "nbflow worker", "dask scheduler", "jupyter lab"}
