"""bench/gpu_check.py --dry: the GPU matrix harness, run on CPU with tiny configs (2 cases, each its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_matrix_runs_two_cases(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    cmd = [sys.executable, "bench/gpu_check.py", "--dry", "--limit", "2", "--threads", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] is True and report["device"] == "cpu"
    assert [c["status"] for c in report["cases"]] == ["ok", "ok"]
    first, second = (c["result"] for c in report["cases"])
    assert first["plan"]["seq_len"] < second["plan"]["seq_len"]  # the s512 / s2048 pair, scaled down
    assert second["measured"]["peak_allocated"] > first["measured"]["peak_allocated"] > 0
    assert report["versions"]["torch"]
    for result in (first, second):
        components = result["measured"]["components"]
        assert sum(components.values()) == result["measured"]["peak_allocated"]


def test_full_matrix_shape() -> None:
    from bench import gpu_check

    for dry in (True, False):
        cases = gpu_check.matrix(dry)
        assert len(cases) == 3 * 2 * 2 * 2
        assert len({c["name"] for c in cases}) == len(cases)
        assert {c["plan"]["device"] for c in cases} == {"cpu" if dry else "cuda"}
