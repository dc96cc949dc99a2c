"""One settings object: documented defaults, ``NBFLOW_*`` environment variables,
and ``[tool.nbflow]`` in the ``pyproject.toml`` of the working directory.

Precedence (highest first): environment variable, ``[tool.nbflow]``, default.

| setting          | env var                 | default                              |
|------------------|-------------------------|--------------------------------------|
| home             | NBFLOW_HOME             | ``./.nbflow``                        |
| db_url           | NBFLOW_DB_URL           | ``sqlite:///{home}/nbflow.db``       |
| artifact_root    | NBFLOW_ARTIFACT_ROOT    | ``{home}/runs`` (any fsspec URL)     |
| executor         | NBFLOW_EXECUTOR         | ``dask`` (a local cluster unless an address is set) |
| parallelism      | NBFLOW_PARALLELISM      | number of CPUs                       |
| kill_grace       | NBFLOW_KILL_GRACE       | ``5`` seconds from SIGTERM to SIGKILL|
| db_retries       | NBFLOW_DB_RETRIES       | ``8`` retries of a locked database   |
| cancel_poll      | NBFLOW_CANCEL_POLL      | ``2`` s between checks for a cancel  |
| dask_address     | NBFLOW_DASK_ADDRESS     | none: start a local Dask cluster     |
| celery_broker    | NBFLOW_CELERY_BROKER    | none: the ``celery`` executor's broker (``redis://``, ``amqp://``) |
| celery_backend   | NBFLOW_CELERY_BACKEND   | the broker (Redis) or ``rpc://`` (RabbitMQ) |
| dags_folder      | NBFLOW_DAGS_FOLDER      | ``./pipelines``                      |
| import_timeout   | NBFLOW_IMPORT_TIMEOUT   | ``30`` s to import one pipeline file |
| heartbeat        | NBFLOW_HEARTBEAT        | ``2`` s between scheduler heartbeats |
| orphan_timeout   | NBFLOW_ORPHAN_TIMEOUT   | ``30`` s without heartbeat: a driver is dead |
| max_param_bytes  | NBFLOW_MAX_PARAM_BYTES  | ``65536``: longest run parameter value (as JSON) |
| max_body_bytes   | NBFLOW_MAX_BODY_BYTES   | ``1048576``: largest REST request body (else 413) |
| max_log_bytes    | NBFLOW_MAX_LOG_BYTES    | ``1048576``: most log bytes one REST answer carries |
| max_map_length   | NBFLOW_MAX_MAP_LENGTH   | ``1024``: most instances of one mapped task |
| max_infra_retries| NBFLOW_MAX_INFRA_RETRIES| ``2``: tries lost with their worker or driver that consume no retry |
| kernel_pool      | NBFLOW_KERNEL_POOL      | ``1``: pre-started kernels per worker slot and kernel name (0: off) |
| venv_cache       | NBFLOW_VENV_CACHE       | ``{home}/venvs``: virtualenvs of ``@task(requirements=...)`` |
| ui_url           | NBFLOW_UI_URL           | none: the Jupyter server's URL (``http://host:8888/``) that notifications link to |
| fernet_key       | NBFLOW_FERNET_KEY       | none: the Fernet key of stored connection secrets (``nbflow connections key``) |
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nbflow.exceptions import NbflowError


@dataclass(frozen=True)
class Settings:
    """nbflow's settings; build with :func:`get_settings`."""

    home: Path
    db_url: str
    artifact_root: str
    executor: str = "dask"
    parallelism: int = max(1, os.cpu_count() or 1)
    kill_grace: float = 5.0
    db_retries: int = 8
    cancel_poll: float = 2.0
    dask_address: str | None = None
    dags_folder: str = "pipelines"
    import_timeout: float = 30.0
    heartbeat: float = 2.0
    orphan_timeout: float = 30.0
    max_param_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024
    max_log_bytes: int = 1024 * 1024
    max_map_length: int = 1024
    max_infra_retries: int = 2
    kernel_pool: int = 1
    venv_cache: str = ""  # load_settings fills in {home}/venvs
    ui_url: str = ""  # the Jupyter server (with nbflow's extension) that notifications link to
    celery_broker: str | None = None
    celery_backend: str | None = None  # None: the broker for Redis, rpc:// for RabbitMQ
    fernet_key: str | None = field(
        default=None, repr=False
    )  # encrypts connection passwords/extras and variables (nbflow.vault)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return replace(self, **changes)


_ENV = {
    "home": "NBFLOW_HOME",
    "db_url": "NBFLOW_DB_URL",
    "artifact_root": "NBFLOW_ARTIFACT_ROOT",
    "executor": "NBFLOW_EXECUTOR",
    "parallelism": "NBFLOW_PARALLELISM",
    "kill_grace": "NBFLOW_KILL_GRACE",
    "db_retries": "NBFLOW_DB_RETRIES",
    "cancel_poll": "NBFLOW_CANCEL_POLL",
    "dask_address": "NBFLOW_DASK_ADDRESS",
    "celery_broker": "NBFLOW_CELERY_BROKER",
    "celery_backend": "NBFLOW_CELERY_BACKEND",
    "dags_folder": "NBFLOW_DAGS_FOLDER",
    "import_timeout": "NBFLOW_IMPORT_TIMEOUT",
    "heartbeat": "NBFLOW_HEARTBEAT",
    "orphan_timeout": "NBFLOW_ORPHAN_TIMEOUT",
    "max_param_bytes": "NBFLOW_MAX_PARAM_BYTES",
    "max_body_bytes": "NBFLOW_MAX_BODY_BYTES",
    "max_log_bytes": "NBFLOW_MAX_LOG_BYTES",
    "max_map_length": "NBFLOW_MAX_MAP_LENGTH",
    "max_infra_retries": "NBFLOW_MAX_INFRA_RETRIES",
    "kernel_pool": "NBFLOW_KERNEL_POOL",
    "venv_cache": "NBFLOW_VENV_CACHE",
    "ui_url": "NBFLOW_UI_URL",
    "fernet_key": "NBFLOW_FERNET_KEY",
}


def _pyproject_table(cwd: Path) -> dict[str, Any]:
    path = cwd / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NbflowError(f"cannot read [tool.nbflow]: {exc}", where=str(path)) from exc
    table = data.get("tool", {}).get("nbflow", {})
    unknown = set(table) - set(_ENV)
    if unknown:
        raise NbflowError(
            f"unknown [tool.nbflow] keys: {', '.join(sorted(unknown))}",
            where=str(path),
            hint=f"known keys: {', '.join(_ENV)}",
        )
    return table


def _coerce(name: str, raw: Any, source: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise NbflowError(f"setting '{name}' must be a number, got {raw!r}", where=source) from exc
    return raw


def load_settings(cwd: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment and ``pyproject.toml`` (no caching)."""
    cwd = Path(cwd or os.getcwd())
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, raw in _pyproject_table(cwd).items():
        values[name] = _coerce(name, raw, str(cwd / "pyproject.toml"))
    for name, var in _ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], f"${var}")
    home = Path(values.pop("home", cwd / ".nbflow")).expanduser()
    if not home.is_absolute():
        home = (cwd / home).resolve()
    db_url = values.pop("db_url", None) or f"sqlite:///{home / 'nbflow.db'}"
    artifact_root = str(values.pop("artifact_root", None) or home / "runs")
    venvs = values.get("venv_cache")
    values["venv_cache"] = str((cwd / Path(venvs).expanduser()).resolve()) if venvs else str(home / "venvs")
    values["dags_folder"] = str((cwd / values.get("dags_folder", "pipelines")).resolve())
    if "://" not in artifact_root and not Path(artifact_root).is_absolute():
        artifact_root = str((cwd / artifact_root).resolve())
    return Settings(home=home, db_url=db_url, artifact_root=artifact_root, **values)


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once; :func:`reset_settings` forgets them."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings() -> None:
    """Forget cached settings (tests and long-lived kernels that change ``NBFLOW_*``)."""
    global _cached
    _cached = None
