"""Tables of the metadata database (SQLAlchemy 2 declarative).

The schema is created and changed only by Alembic migrations in ``migrations/``; a test
checks that these models and the migrated schema agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of nbflow's tables."""


class PipelineRow(Base):
    """A pipeline by name: where it is defined, its schedule, its latest version."""

    __tablename__ = "pipelines"
    name: Mapped[str] = mapped_column(String(250), primary_key=True)
    file: Mapped[str | None] = mapped_column(Text)
    schedule: Mapped[str | None] = mapped_column(String(250))
    description: Mapped[str] = mapped_column(Text, default="")
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    latest_version_id: Mapped[int | None] = mapped_column(Integer)
    start_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    catchup: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_active_runs: Mapped[int] = mapped_column(Integer, default=16, server_default="16")
    max_active_tasks: Mapped[int | None] = mapped_column(Integer)
    #: the scheduler's pointer: logical date of the next scheduled run to create
    next_logical_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PipelineVersionRow(Base):
    """One distinct definition of a pipeline (fingerprint of code + params)."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline", "fingerprint", name="uq_pipeline_versions_fingerprint"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(250), ForeignKey("pipelines.name", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunRow(Base):
    """One run of a pipeline version."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("pipeline", "logical_date", name="uq_runs_logical_date"),
        UniqueConstraint("pipeline", "idempotency_key", name="uq_runs_idempotency_key"),
        Index("ix_runs_pipeline_id", "pipeline", "id"),
        Index("ix_runs_state", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(250), ForeignKey("pipelines.name", ondelete="CASCADE"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_versions.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))
    logical_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    params: Mapped[dict] = mapped_column(JSON)
    executor: Mapped[str | None] = mapped_column(String(50))
    data_interval_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    data_interval_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the job (scheduler or runner process) driving the run
    driver_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    #: reuse the outputs of tasks that are up to date instead of running them (incremental run)
    incremental: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: task ids an incremental run executes (with their downstream) even when up to date
    force: Mapped[list | None] = mapped_column(JSON)
    #: the Idempotency-Key of the REST trigger that made the run (a repeated POST gets this run)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: the sweep this run is a point of (``nbflow run --sweep``)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"))
    #: when the run was found not finished within its pipeline's ``sla`` (reported once)
    sla_missed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskInstanceRow(Base):
    """The current state of one task in one run (one row; attempts are separate)."""

    __tablename__ = "task_instances"
    __table_args__ = (
        UniqueConstraint("run_id", "task_id", name="uq_task_instances_run_task"),
        Index("ix_task_instances_state", "state"),
        Index("ix_task_instances_pool_state", "pool", "state"),
        Index("ix_task_instances_task_state_run", "task_id", "state", "run_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(250))
    kind: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20))
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(String(100), default="default")
    pool: Mapped[str | None] = mapped_column(String(100))
    pool_slots: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(250))
    pid: Mapped[int | None] = mapped_column(Integer)
    executor_key: Mapped[str | None] = mapped_column(String(500))
    start_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log_uri: Mapped[str | None] = mapped_column(Text)
    output_uri: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(50))
    error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # -- incremental runs (nbflow.fingerprint, nbflow.incremental) ------------------------------
    #: the fingerprint of what this task instance ran with (its code, values, files, upstream outputs)
    cache_key: Mapped[str | None] = mapped_column(String(64))
    #: the named parts of that fingerprint, to say what changed
    cache_parts: Mapped[dict | None] = mapped_column(JSON)
    #: content hash of its outputs (downstream fingerprints use it)
    output_digest: Mapped[str | None] = mapped_column(String(64))
    #: a ``cached`` task instance: the run and try whose outputs it reuses
    reused_run_id: Mapped[int | None] = mapped_column(Integer)
    reused_try: Mapped[int | None] = mapped_column(Integer)
    #: why an incremental run reused it ("reused from run 4, try 1") or ran it ("parameter C: 1.0 -> 0.5")
    why: Mapped[str | None] = mapped_column(Text)
    # -- dynamic task mapping (nbflow.mapspec, nbflow.expansion) --------------------------------
    #: a mapped task, once expanded: how many instances it has
    map_count: Mapped[int | None] = mapped_column(Integer)
    #: an instance of a mapped task: the mapped task's id, its index and its values ({"C": 0.1})
    map_parent: Mapped[str | None] = mapped_column(String(250))
    map_index: Mapped[int | None] = mapped_column(Integer)
    map_values: Mapped[dict | None] = mapped_column(JSON)


class TaskAttemptRow(Base):
    """One attempt (try) of a task instance: where it ran and how it ended."""

    __tablename__ = "task_attempts"
    __table_args__ = (UniqueConstraint("run_id", "task_id", "try_number", name="uq_task_attempts_try"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(250))
    try_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    executor_key: Mapped[str | None] = mapped_column(String(500))
    hostname: Mapped[str | None] = mapped_column(String(250))
    pid: Mapped[int | None] = mapped_column(Integer)  # of the worker process
    kernel_pid: Mapped[int | None] = mapped_column(Integer)  # of a notebook attempt's kernel
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(String(50))
    message: Mapped[str | None] = mapped_column(Text)
    ename: Mapped[str | None] = mapped_column(String(250))
    evalue: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    cell_index: Mapped[int | None] = mapped_column(Integer)
    exec_count: Mapped[int | None] = mapped_column(Integer)
    log_uri: Mapped[str | None] = mapped_column(Text)
    output_uri: Mapped[str | None] = mapped_column(Text)


class ArtifactRow(Base):
    """A value a task attempt stored (its return value, or what a notebook saved)."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_run_task", "run_id", "task_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(250))
    try_number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(250))
    uri: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    #: sha256 of the stored bytes (None for artifacts written before nbflow kept it)
    digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MetricRow(Base):
    """A scalar an attempt recorded (``nbflow.metric``, or a number/bool/short string it saved)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run", "run_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(250))
    try_number: Mapped[int] = mapped_column(Integer)
    #: the mapped instance's index (None: not a mapped task)
    map_index: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    #: numbers, and bools as 1/0; None for strings
    value_num: Mapped[float | None] = mapped_column(Float)
    #: strings, and bools as "true"/"false"; None for numbers
    value_text: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SweepRow(Base):
    """Runs of one pipeline made together, one per point of a parameter grid (``--sweep``)."""

    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(250), ForeignKey("pipelines.name", ondelete="CASCADE"))
    #: ``{param: [values...]}``, in the order given; the runs are its cross product
    grid: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobRow(Base):
    """A process that drives runs (a scheduler, or an `nbflow run`): its heartbeat lease."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_state", "kind", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    hostname: Mapped[str] = mapped_column(String(250))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImportErrorRow(Base):
    """A pipeline file of the DAG folder that failed to load, with where and why."""

    __tablename__ = "import_errors"
    filename: Mapped[str] = mapped_column(String(1000), primary_key=True)
    location: Mapped[str] = mapped_column(String(1100))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolRow(Base):
    """A named pool of slots that limits how many tasks run at once, across runs and schedulers."""

    __tablename__ = "pools"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")


class ConnectionRow(Base):
    """A named connection (a database, an API): its password and extra are Fernet tokens."""

    __tablename__ = "connections"
    name: Mapped[str] = mapped_column(String(250), primary_key=True)
    conn_type: Mapped[str] = mapped_column(String(50))
    host: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int | None] = mapped_column(Integer)
    login: Mapped[str | None] = mapped_column(Text)
    #: a Fernet token of the password (never the password itself)
    password: Mapped[str | None] = mapped_column(Text)
    schema: Mapped[str | None] = mapped_column(Text)
    #: a Fernet token of the extra fields' JSON
    extra: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VariableRow(Base):
    """A named JSON value tasks read with ``nbflow.variable``; encrypted when a key is configured."""

    __tablename__ = "variables"
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    #: the value's JSON, or a Fernet token of it (``is_encrypted``)
    value: Mapped[str] = mapped_column(Text)
    is_encrypted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetRow(Base):
    """A declared asset (``nbflow.Asset``): its uri and description, from the pipelines that name it."""

    __tablename__ = "assets"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    uri: Mapped[str] = mapped_column(Text, default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetRefRow(Base):
    """A pipeline's task that produces an asset (``role`` producer), or a pipeline scheduled on it
    (``role`` consumer, ``task_id`` ""; ``since``: events before it do not count for it)."""

    __tablename__ = "asset_refs"
    __table_args__ = (Index("ix_asset_refs_pipeline", "pipeline"),)
    asset: Mapped[str] = mapped_column(String(200), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(250), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetEventRow(Base):
    """An update of an asset: one per successful attempt that produced it (no foreign keys: the
    lineage outlives the retention of runs)."""

    __tablename__ = "asset_events"
    __table_args__ = (
        UniqueConstraint("run_id", "task_id", "try_number", "asset", name="uq_asset_events_attempt"),
        Index("ix_asset_events_asset", "asset", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset: Mapped[str] = mapped_column(String(200))
    pipeline: Mapped[str] = mapped_column(String(250))
    run_id: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str] = mapped_column(String(250))
    try_number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetConsumedRow(Base):
    """An asset event an asset-triggered run consumed (its lineage); an event is consumed once
    per consumer pipeline (the primary key)."""

    __tablename__ = "asset_consumed"
    __table_args__ = (Index("ix_asset_consumed_run", "run_id"), Index("ix_asset_consumed_event", "event_id"))
    pipeline: Mapped[str] = mapped_column(String(250), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[int] = mapped_column(Integer)
    asset: Mapped[str] = mapped_column(String(200))


# Declarative types ``__table__`` as a FromClause; a mapped class's table is a Table (insert/update need one).
pipelines = cast(Table, PipelineRow.__table__)
pipeline_versions = cast(Table, PipelineVersionRow.__table__)
runs = cast(Table, RunRow.__table__)
task_instances = cast(Table, TaskInstanceRow.__table__)
task_attempts = cast(Table, TaskAttemptRow.__table__)
artifacts = cast(Table, ArtifactRow.__table__)
jobs = cast(Table, JobRow.__table__)
metrics = cast(Table, MetricRow.__table__)
sweeps = cast(Table, SweepRow.__table__)
import_errors = cast(Table, ImportErrorRow.__table__)
pools = cast(Table, PoolRow.__table__)
connections = cast(Table, ConnectionRow.__table__)
variables = cast(Table, VariableRow.__table__)
assets = cast(Table, AssetRow.__table__)
asset_refs = cast(Table, AssetRefRow.__table__)
asset_events = cast(Table, AssetEventRow.__table__)
asset_consumed = cast(Table, AssetConsumedRow.__table__)
