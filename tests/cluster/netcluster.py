"""Hosts as Linux network namespaces on one bridge: the multi-host harness of ``tests/cluster``
and of the ``cluster`` benchmark group.

The machine running the test is the *scheduler host*: the driver, the metadata database
(SQLite in its ``NBFLOW_HOME``, or the PostgreSQL server on its 127.0.0.1, which no other host
can reach) and the REST API. It owns a bridge with the first address of a private /24
(``10.213.X.0/24``, X picked free; nothing outside the machine is ever addressed). Every other
host is a network namespace with a veth pair on that bridge, its own hostname (a UTS
namespace), and, for worker hosts, its own view of the disk (the mount namespace that
``ip netns exec`` makes): the scheduler host's folder, ``NBFLOW_HOME`` and DAG folder
included, is hidden under an empty tmpfs, and the host's own copy of the DAG folder is
mounted at the same path, as an image with the code baked in would have it.

    with NetCluster(tmp_path) as cluster:
        dask = cluster.dask_scheduler()                 # tcp://10.213.X.2:8786
        s3 = cluster.object_store()                     # http://10.213.X.3:5000 (moto's S3 server)
        cluster.worker("w1", queues=["default"])         # nbflow worker on 10.213.X.11
        env = cluster.driver_env()                      # NBFLOW_* for the scheduler host
        cluster.cut("w1"); cluster.restore("w1")        # the host's link down / up

:func:`unavailable` says why a machine cannot run it (not root, no ``ip``, namespaces refused);
the tests skip with that reason and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUCKET = "nbflow"
S3_KEY = S3_SECRET = "nbflow-test"  # moto accepts any credentials
# Timeouts that let an unreachable store fail an upload in seconds (botocore's defaults wait a
# minute per connection and retry five times); the tests pass these through fsspec's settings.
S3_CONFIG = {"connect_timeout": 2, "read_timeout": 15, "retries": {"max_attempts": 2, "mode": "standard"}}
# Dask gives up on a worker it has not heard from in this long (its default is 5 minutes):
# it asks the worker's nanny to restart it, and removes it when the nanny cannot be reached
# within the connect timeout (default 30 s); the task it ran then fails at once
# (allowed-failures 0) so that nbflow's retries decide. docs/deploy.md gives the same advice.
WORKER_TTL = "5s"
CONNECT_TIMEOUT = "5s"

_HOST_SCRIPT = r"""
set -e
hostname "$NBFLOW_NETNS_HOSTNAME"
for d in $NBFLOW_NETNS_HIDE; do mount -t tmpfs -o size=4m nbflow-hidden "$d"; done
for b in $NBFLOW_NETNS_BIND; do mkdir -p "${b#*=}"; mount --bind "${b%%=*}" "${b#*=}"; done
unset NBFLOW_NETNS_HOSTNAME NBFLOW_NETNS_HIDE NBFLOW_NETNS_BIND
exec "$@"
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why this machine cannot make namespace hosts (None when it can)."""
    if os.geteuid() != 0:
        return "the multi-host tests make network namespaces, which needs root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "the multi-host tests need iproute2's `ip` and util-linux's `unshare`"
    probe = f"nbfprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"this machine refuses network namespaces (`ip netns add`: {made.stderr.strip()})"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    """X of a 10.213.X.0/24 no interface here uses, whose bridge name is free."""
    used = _ip("-o", "addr").stdout
    links = _ip("-o", "link").stdout
    start = os.getpid() % 200 + 20
    for offset in range(200):
        x = (start + offset) % 230 + 20
        if f"10.213.{x}." not in used and f"nbf{x}br" not in links:
            return x
    raise RuntimeError("no free 10.213.X.0/24 for the test cluster")


class Host:
    """One namespace host: its name, address, and the processes started on it."""

    def __init__(self, cluster: NetCluster, name: str, number: int):
        self.cluster, self.name = cluster, name
        self.netns = f"nbf{cluster.x}-{name}"
        self.veth = f"nbf{cluster.x}{name}"[:15]
        self.address = f"10.213.{cluster.x}.{number}"
        self.folder = cluster.root / "hosts" / name
        self.procs: list[subprocess.Popen] = []

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("link", "set", self.veth, "master", self.cluster.bridge, "up")
        self.exec_ip("link", "set", "lo", "up")
        self.exec_ip("addr", "add", f"{self.address}/24", "dev", "eth0")
        self.exec_ip("link", "set", "eth0", "up")
        (self.folder / "home").mkdir(parents=True, exist_ok=True)
        (self.folder / "tmp").mkdir(exist_ok=True)

    def exec_ip(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", *args], check=True, capture_output=True)

    def _command(self, argv: list[str], env: dict[str, str], private_disk: bool) -> tuple[list[str], dict[str, str]]:
        """``argv`` wrapped to run on this host: its namespace, its own hostname and, with
        ``private_disk``, the scheduler host's folder and the other hosts' hidden, and this
        host's DAG folder copy mounted in the scheduler host's place."""
        hide, bind = [], []
        if private_disk:
            hide = [str(self.cluster.driver_folder)]
            hide += [str(h.folder) for h in self.cluster.hosts.values() if h is not self]
            if (self.folder / "dags").is_dir():
                bind.append(f"{self.folder / 'dags'}={self.cluster.dags}")
        wrapped = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", "sh", "-c", _HOST_SCRIPT, "sh", *argv]
        hosted = {
            **env,
            "NBFLOW_NETNS_HOSTNAME": self.netns,
            "NBFLOW_NETNS_HIDE": " ".join(hide),
            "NBFLOW_NETNS_BIND": " ".join(bind),
        }
        return wrapped, hosted

    def start(self, argv: list[str], env: dict[str, str], log: str, *, private_disk: bool = True) -> subprocess.Popen:
        """Start ``argv`` on this host in the background, its output in ``log`` (in the host's folder)."""
        wrapped, hosted = self._command(argv, env, private_disk)
        with open(self.folder / log, "ab") as out:
            proc = subprocess.Popen(
                wrapped, env=hosted, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command on this host (private disk) and wait for it."""
        wrapped, hosted = self._command(argv, env, True)
        return subprocess.run(wrapped, env=hosted, capture_output=True, text=True, timeout=timeout, cwd=self.folder)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs.clear()
        # whatever is left in the namespace (a kernel that left its process group)
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else ""


class NetCluster:
    """The bridge, the namespace hosts on it and their processes; ``close()`` removes them all."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.driver_folder = self.root / "driver"
        self.dags = self.driver_folder / "dags"
        self.home = self.driver_folder / "home"
        self.dags.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        self.x = _free_subnet()
        self.bridge = f"nbf{self.x}br"
        self.gateway = f"10.213.{self.x}.1"
        self.hosts: dict[str, Host] = {}
        self._next = 11
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.dask_address: str | None = None
        self.s3_endpoint: str | None = None

    def __enter__(self) -> NetCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def host(self, name: str, number: int | None = None) -> Host:
        """A new namespace host on the bridge (workers get .11, .12, ...)."""
        if number is None:
            number, self._next = self._next, self._next + 1
        host = Host(self, name, number)
        self.hosts[name] = host
        host.create()
        return host

    # --- the services -----------------------------------------------------------------------

    def dask_scheduler(self) -> str:
        """A Dask scheduler on its own host (allowed-failures 0, a short worker TTL)."""
        host = self.host("dask", 2)
        env = {
            **os.environ,
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL,
            "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": CONNECT_TIMEOUT,
        }
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host.address, "--port", "8786"]
        host.start([*argv, "--dashboard-address", f"{host.address}:8787"], env, "scheduler.log", private_disk=False)
        self.dask_address = f"tcp://{host.address}:8786"
        _wait_port(host.address, 8786, 30, lambda: host.log("scheduler.log"))
        return self.dask_address

    def object_store(self) -> str:
        """moto's S3 server (``moto[server]``) on its own host, with the bucket made."""
        host = self.host("s3", 3)
        host.start(["moto_server", "-H", host.address, "-p", "5000"], dict(os.environ), "s3.log", private_disk=False)
        self.s3_endpoint = f"http://{host.address}:5000"
        _wait_port(host.address, 5000, 30, lambda: host.log("s3.log"))
        self.s3fs().mkdir(BUCKET)
        return self.s3_endpoint

    def s3fs(self) -> Any:
        """An s3fs filesystem on the object store (from the scheduler host), caches off."""
        import s3fs

        return s3fs.S3FileSystem(
            key=S3_KEY,
            secret=S3_SECRET,
            endpoint_url=self.s3_endpoint,
            config_kwargs=S3_CONFIG,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def s3_env(self) -> dict[str, str]:
        """What any host needs to reach the object store (fsspec reads FSSPEC_S3)."""
        options = {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": self.s3_endpoint, "config_kwargs": S3_CONFIG}
        return {"FSSPEC_S3": json.dumps(options), "AWS_EC2_METADATA_DISABLED": "true"}

    def worker(self, name: str, queues: list[str], *, dags: bool = True, env: dict[str, str] | None = None) -> Host:
        """A worker host running ``nbflow worker --nthreads 1`` for the Dask scheduler; ``dags``:
        whether its DAG folder copy (made now from the scheduler host's) is there; ``env``:
        more environment for it."""
        host = self.host(name)
        if dags:
            shutil.copytree(self.dags, host.folder / "dags", dirs_exist_ok=True)
        else:
            (host.folder / "dags").mkdir(exist_ok=True)
        argv = ["nbflow", "worker", "--scheduler", str(self.dask_address), "--name", name, "--nthreads", "1"]
        for queue in queues:
            argv += ["--queue", queue]
        host.start(argv, {**self.worker_env(host), **(env or {})}, "worker.log")
        return host

    def worker_env(self, host: Host) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBFLOW_", "FSSPEC_", "DASK_"))}
        env.update(self.s3_env())
        env.update(NBFLOW_HOME=str(host.folder / "home"), TMPDIR=str(host.folder / "tmp"))
        return env

    def wait_workers(self, names: list[str], timeout: float = 60) -> None:
        """Until the Dask scheduler lists every named worker."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.dask_address, timeout=30) as client:
            while True:
                seen = {w.get("name") for w in client.scheduler_info()["workers"].values()}
                if set(names) <= seen:
                    return
                if time.monotonic() > deadline:
                    logs = {n: self.hosts[n].log("worker.log")[-2000:] for n in names if n not in seen}
                    raise TimeoutError(f"workers {sorted(set(names) - seen)} never joined: {logs}")
                time.sleep(0.3)

    def driver_env(self) -> dict[str, str]:
        """The scheduler host's environment: its own NBFLOW_HOME (SQLite), the Dask scheduler,
        the artifact root ``s3://nbflow/runs`` and the store's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBFLOW_", "FSSPEC_"))}
        env.update(self.s3_env())
        env.update(
            NBFLOW_HOME=str(self.home),
            NBFLOW_ARTIFACT_ROOT=f"s3://{BUCKET}/runs",
            NBFLOW_EXECUTOR="dask",
            NBFLOW_DASK_ADDRESS=str(self.dask_address),
            NBFLOW_KILL_GRACE="2",
        )
        return env

    # --- faults -----------------------------------------------------------------------------

    def cut(self, name: str) -> None:
        """Take the host's link down (its end on the bridge): packets to and from it are lost."""
        _ip("link", "set", self.hosts[name].veth, "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].veth, "up")

    def close(self) -> None:
        for host in reversed(list(self.hosts.values())):
            host.stop()
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts.clear()


def _wait_port(address: str, port: int, timeout: float, log: Any) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {address}:{port} after {timeout:.0f} s: {log()[-2000:]}")
