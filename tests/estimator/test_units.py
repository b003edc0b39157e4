"""How sizes are written (``estimator._units``): one definition for the CLI, the page and the notes."""

from __future__ import annotations

import pytest

from estimator import GIB, count_text, gb_text, gib_text, size_text


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0.0 MiB"), (512 * 2**20, "512.0 MiB"), (GIB, "1.00 GiB"), (int(9.31 * GIB), "9.31 GiB"), (None, "—")],
)
def test_gib_text(n: int | None, text: str) -> None:
    assert gib_text(n) == text


@pytest.mark.parametrize(("n", "text"), [(16_060_522_496, "16.1 GB"), (84 * 10**6, "84.0 MB"), (1500, "1.5 kB")])
def test_gb_text(n: int, text: str) -> None:
    assert gb_text(n) == text


@pytest.mark.parametrize(("n", "text"), [(8_030_261_248, "8.03B"), (41_943_040, "41.9M"), (1_500, "1.5K"), (12, "12")])
def test_count_text(n: int, text: str) -> None:
    assert count_text(n) == text


def test_size_text_labels_both_units() -> None:
    assert size_text(16_060_522_496) == "16.06 GB (14.96 GiB)"
