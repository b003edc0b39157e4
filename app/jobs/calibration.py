"""Calibration profiles: the runtime constants each finished CUDA verify run measured, kept in the job store's
SQLite database (table ``calibrations``), and the latest one per GPU for later estimates.

A profile (``estimator.CalibrationProfile``) is the card's CUDA context, the runtime loaded in the first step, the
cuBLAS workspace and the allocator cache, for that card + driver + torch. ``JobRunner._finish`` records one per
successful CUDA run; ``EstimateService`` passes the latest for the plan's GPU to ``estimate`` when the plan's
``calibration`` is ``auto``, and the estimate then says "calibrated from run <id> on <date>". A CPU run, an OOM or
a card outside the GPU catalog records nothing usable for a catalog GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from estimator import CalibrationProfile, EstimatorError, Plan, calibration_from_run, estimate

log = logging.getLogger(__name__)


class _Base(DeclarativeBase):
    pass


class CalibrationRow(_Base):
    """One run's profile (``profile_json``: ``CalibrationProfile.to_dict()``)."""

    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    gpu: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    device_name: Mapped[str] = mapped_column(String(128))
    profile: Mapped[dict[str, Any]] = mapped_column("profile_json", JSON)


def profile_from_result(result: Mapping[str, Any], run_id: str, when: str | None = None) -> CalibrationProfile | None:
    """The calibration profile of a finished run's result JSON (None where the run calibrates nothing)."""
    when = when or datetime.now(UTC).isoformat(timespec="seconds")
    try:
        plan = Plan.from_dict({**result["plan"], "model": None, "config": result["config"]})
        memory = estimate(plan).memory
    except (EstimatorError, KeyError, TypeError, ValueError):
        return None
    return calibration_from_run(result, run_id, when, memory.head_block, memory.in_op_block)


class CalibrationStore:
    """The ``calibrations`` table, on the job store's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _Base.metadata.create_all(engine)

    def record(self, profile: CalibrationProfile) -> None:
        row = CalibrationRow(run_id=profile.run_id, created_at=profile.measured_at, gpu=profile.gpu,
                             device_name=profile.device_name, profile=profile.to_dict())  # fmt: skip
        with Session(self.engine) as session, session.begin():
            session.add(row)

    def latest(self, gpu: str) -> CalibrationProfile | None:
        """The most recent profile for the catalog GPU ``gpu`` (None without one)."""
        query = select(CalibrationRow).where(CalibrationRow.gpu == gpu)
        query = query.order_by(CalibrationRow.created_at.desc(), CalibrationRow.id.desc()).limit(1)
        with Session(self.engine) as session:
            row = session.scalars(query).first()
            return CalibrationProfile.from_dict(row.profile) if row is not None else None

    def record_run(self, run_id: str, result: Mapping[str, Any]) -> CalibrationProfile | None:
        """Record the profile a finished run measured, if any; the profile recorded."""
        profile = profile_from_result(result, run_id)
        if profile is not None:
            self.record(profile)
            log.info("calibration recorded from run %s (%s)", run_id, profile.device_name)
        return profile
