"""The verify jobs' table: one SQLite file through SQLAlchemy 2, JSON columns for the plan, config, estimate, result
and comparison rows.

Every method is one short transaction, safe from several threads and several processes (web workers, two servers
on one data directory): a transaction that reads before it writes starts with ``BEGIN IMMEDIATE``, so the queue
limit and a cancel cannot race. A cancelled job is marked ``cancelled``; a job that was running when its server
stopped is marked ``failed`` by the runner that takes over; finished jobs beyond ``job_history`` are deleted, oldest
first. A running job records its process (``pid``, ``pid_start``: the boot and the kernel's start time of the
process, so a recycled pid is never mistaken for it) and its work directory.

Column names are those of the first schema (``plan_json`` …); the columns added since (``pid``, ``pid_start``,
``workdir``, ``access``) are added to an older database when it is opened.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, create_engine, delete, event, func, inspect, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE: tuple[str, ...] = ("queued", "running")
FINISHED: tuple[str, ...] = ("done", "failed", "cancelled")
INTERRUPTED = "interrupted: its server stopped during the run (the next server stopped what was left of it)"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _Base(DeclarativeBase):
    pass


class JobRow(_Base):
    """One verify job. ``created_at``/``updated_at`` are ISO 8601 UTC."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    updated_at: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    device: Mapped[str] = mapped_column(String(8))
    steps: Mapped[int] = mapped_column(Integer, default=1)
    plan: Mapped[dict[str, Any]] = mapped_column("plan_json", JSON)
    config: Mapped[dict[str, Any]] = mapped_column("config_json", JSON)
    estimate: Mapped[dict[str, Any]] = mapped_column("estimate_json", JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column("result_json", JSON, nullable=True)
    comparison: Mapped[dict[str, Any] | None] = mapped_column("comparison_json", JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_start: Mapped[str | None] = mapped_column(String(80), nullable=True)
    workdir: Mapped[str | None] = mapped_column(Text, nullable=True)
    access: Mapped[str | None] = mapped_column(String(80), nullable=True)
    """None: a public model; else who may read the job (``app.security.job_access``)."""

    def summary(self) -> dict[str, Any]:
        """The job without its estimate and result (``GET /api/jobs``)."""
        return {
            "id": self.id,
            "status": self.status,
            "url": f"/api/jobs/{self.id}",
            "device": self.device,
            "steps": self.steps,
            "model": self.plan.get("model") or "inline config",
            "method": self.plan.get("method"),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "error": self.error,
        }

    def detail(self) -> dict[str, Any]:
        """The job with its plan, estimate, result (``measured``) and comparison rows (``GET /api/jobs/{id}``)."""
        return self.summary() | {
            "plan": self.plan,
            "estimate": self.estimate,
            "result": self.result,
            "comparison": self.comparison,
        }


class JobStore:
    """The ``jobs`` table of one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.engine = self._engine("BEGIN")
        self.writer = self._engine("BEGIN IMMEDIATE")  # transactions that read, then write on what they read
        _Base.metadata.create_all(self.writer)
        self._add_missing_columns()

    def _engine(self, begin: str) -> Engine:
        """An engine on the file whose transactions start with ``begin`` (pysqlite's own BEGIN handling off, as
        SQLAlchemy's SQLite documentation recommends for explicit transaction modes)."""
        engine = create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _no_driver_begin(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def _add_missing_columns(self) -> None:
        """Columns added since the first schema, added to a database written by an earlier version."""
        present = {c["name"] for c in inspect(self.writer).get_columns(JobRow.__tablename__)}
        with self.writer.begin() as conn:
            for column in JobRow.__table__.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=self.writer.dialect)
                    conn.execute(text(f'ALTER TABLE {JobRow.__tablename__} ADD COLUMN "{column.name}" {kind}'))

    def close(self) -> None:
        self.engine.dispose()
        self.writer.dispose()

    @contextlib.contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """One transaction; ``write``: it reads and then writes on what it read, so it takes the write lock first."""
        with Session(self.writer if write else self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def create(
        self,
        *,
        device: str,
        steps: int,
        plan: dict[str, Any],
        config: dict[str, Any],
        estimate: dict[str, Any],
        status: str = "queued",
        access: str | None = None,
        max_queued: int | None = None,
    ) -> JobRow | None:
        """A new job; None when ``max_queued`` jobs are already queued (checked and inserted in one transaction)."""
        stamp = now()
        row = JobRow(
            id=secrets.token_hex(8),
            created_at=stamp,
            updated_at=stamp,
            status=status,
            device=device,
            steps=steps,
            plan=plan,
            config=config,
            estimate=estimate,
            access=access,
        )
        with self._session(write=True) as session:
            if max_queued is not None:
                queued = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == "queued"))
                if (queued or 0) >= max_queued:
                    return None
            session.add(row)
        return row

    def get(self, job_id: str) -> JobRow | None:
        with self._session() as session:
            return session.get(JobRow, job_id)

    def recent(self, limit: int = 20) -> list[JobRow]:
        with self._session() as session:
            query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
            return list(session.scalars(query))

    def set_status(self, job_id: str, status: str, *, only_from: tuple[str, ...] = (), **fields: Any) -> bool:
        """Move a job to ``status`` (only from one of ``only_from`` when given); whether it moved."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        query = update(JobRow).where(JobRow.id == job_id)
        if only_from:
            query = query.where(JobRow.status.in_(only_from))
        with self._session() as session:
            moved = session.execute(query.values(status=status, updated_at=now(), **fields))
            return bool(getattr(moved, "rowcount", 0))

    def claim_next(self) -> JobRow | None:
        """The oldest queued job, moved to ``running`` (None when nothing is queued)."""
        with self._session(write=True) as session:
            query = select(JobRow).where(JobRow.status == "queued").order_by(JobRow.created_at, JobRow.id).limit(1)
            row = session.scalars(query).first()
            if row is None:
                return None
            row.status, row.updated_at = "running", now()
            return row

    def cancel(self, job_id: str) -> bool:
        """Move a queued or running job to ``cancelled`` in one statement; whether it moved (False: it was not
        active, or another request cancelled it first)."""
        return self.set_status(job_id, "cancelled", only_from=ACTIVE, error="cancelled")

    def record_process(self, job_id: str, pid: int, pid_start: str | None, workdir: str) -> None:
        """What the runner started for a job: its process and its work directory."""
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(pid=pid, pid_start=pid_start,
                                                                            workdir=workdir))  # fmt: skip

    def running(self) -> list[JobRow]:
        """The jobs marked ``running``."""
        with self._session() as session:
            return list(session.scalars(select(JobRow).where(JobRow.status == "running")))

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """The status of each of ``job_ids`` (those that exist)."""
        if not job_ids:
            return {}
        with self._session() as session:
            rows = session.execute(select(JobRow.id, JobRow.status).where(JobRow.id.in_(job_ids)))
            return {row.id: row.status for row in rows}

    def prune(self, keep: int) -> int:
        """Delete finished jobs beyond the ``keep`` newest; how many."""
        with self._session(write=True) as session:
            newest = (
                select(JobRow.id)
                .where(JobRow.status.in_(FINISHED))
                .order_by(JobRow.created_at.desc(), JobRow.id.desc())
                .limit(keep)
            )
            gone = session.execute(
                delete(JobRow).where(JobRow.status.in_(FINISHED), JobRow.id.not_in(newest.scalar_subquery()))
            )
            return int(getattr(gone, "rowcount", 0))
