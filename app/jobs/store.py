"""The verify jobs' table: one SQLite file through SQLAlchemy 2, JSON columns for the plan, config, estimate, result
and comparison rows.

Every method is one short transaction (safe from several threads). Nothing is deleted: a cancelled job is marked
``cancelled``; a job that was running when its server stopped is marked ``failed`` by the next server.
Column names are those of the first schema (``plan_json`` …), so a database written by an earlier version opens
unchanged.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE: tuple[str, ...] = ("queued", "running")
INTERRUPTED = "interrupted by a restart"


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
        self.engine: Engine = create_engine(
            f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
        )
        _Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
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
    ) -> JobRow:
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
        )
        with self._session() as session:
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
        while True:
            with self._session() as session:
                query = select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.created_at, JobRow.id)
                job_id = session.scalars(query.limit(1)).first()
            if job_id is None:
                return None
            if self.set_status(job_id, "running", only_from=("queued",)):
                return self.get(job_id)

    def fail_interrupted(self, message: str = INTERRUPTED) -> int:
        """Jobs left ``running`` by a previous server → ``failed`` with ``message``; how many."""
        with self._session() as session:
            moved = session.execute(
                update(JobRow)
                .where(JobRow.status == "running")
                .values(status="failed", error=message, updated_at=now())
            )
            return int(getattr(moved, "rowcount", 0))
