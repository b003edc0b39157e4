"""Units and how sizes are written: one definition for the CLI, the page, the charts and the estimator's notes.

GPU memory is counted in GiB (2³⁰ bytes: what ``torch.cuda`` and ``nvidia-smi`` count in), disk in GB (10⁹ bytes:
what the Hub and ``du --si`` show). Every function takes integer bytes (or a count) and returns text.
"""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
GB = 10**9
MB = 10**6


def gib_text(n: float | None) -> str:
    """GPU memory: ``9.31 GiB``; below a GiB in MiB (``512.0 MiB``); None is ``—``."""
    if n is None:
        return "—"
    if abs(n) < GIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / GIB:.2f} GiB"


def gb_text(n: float | None) -> str:
    """Disk: ``16.1 GB``; small sizes in MB or kB; None is ``—``."""
    if n is None:
        return "—"
    if abs(n) >= GB:
        return f"{n / GB:.1f} GB"
    if abs(n) >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 10**3:.1f} kB"


def size_text(n: float) -> str:
    """Both units, labelled, for tables that serve disk and memory alike: ``16.06 GB (14.96 GiB)``."""
    return f"{n / GB:,.2f} GB ({n / GIB:,.2f} GiB)"


def count_text(n: float | None) -> str:
    """Parameter counts: ``8.03B``, ``167.8M``, ``12.3K``."""
    if n is None:
        return "—"
    for size, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}" if suffix in ("T", "B") else f"{n / size:.1f}{suffix}"
    return str(int(n))
