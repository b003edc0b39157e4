"""Screenshots of the planner page for the README: desktop, compare, sweeps, the objectives, phone width (the
sticky result above the form being edited), the make-it-fit advisor, dark mode.

Starts the app on a free loopback port (or uses ``--url``), drives headless Chromium through Playwright and
writes small PNGs to ``docs/screenshots/``::

    .venv/bin/python -m bench.screenshots                 # starts the app itself
    .venv/bin/python -m bench.screenshots --url http://127.0.0.1:8000 --out /tmp/shots

Needs Debian's ``chromium`` (``apt-get install -y chromium``) at ``/usr/bin/chromium`` (or ``--chromium``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from app.main import create_app
from app.settings import Settings
from bench.browser import CHROMIUM, launch_chromium, load, serve

ROOT = Path(__file__).resolve().parent.parent

# (file name, query string, viewport, colour scheme, element to scroll to the top or None)
SHOTS: tuple[tuple[str, str, dict[str, int], str, str | None], ...] = (
    (
        "desktop.png",
        "?model=llama-3.1-8b&method=qlora&seq_len=4096&gpu=rtx-4090",
        {"width": 1280, "height": 900},
        "light",
        None,
    ),
    (
        "compare.png",
        "?model=llama-3.1-8b&method=compare&seq_len=2048&gpu=a100-80gb",
        {"width": 1280, "height": 900},
        "light",
        "#chart-memory",
    ),
    (
        "sweeps.png",
        "?model=llama-3.1-8b&method=compare&seq_len=2048&gpu=a100-80gb",
        {"width": 1280, "height": 900},
        "light",
        "#chart-seq_len",
    ),
    (
        "objectives.png",
        "?model=qwen2.5-7b-instruct&method=lora&seq_len=2048&gpu=h100-sxm&objective=dpo",
        {"width": 1280, "height": 900},
        "light",
        "#chart-objectives",
    ),
    (
        "phone.png",
        "?model=qwen2.5-7b&method=lora&seq_len=2048&gpu=l4",
        {"width": 390, "height": 844},
        "light",
        "#seq_len",
    ),
    (
        "advisor.png",
        "?model=llama-3.1-8b&method=qlora&batch_size=4&seq_len=4096&gpu=rtx-4090",
        {"width": 1280, "height": 900},
        "light",
        "#advice",
    ),
    (
        "dark.png",
        "?model=llama-3.1-8b&method=compare&seq_len=4096&gpu=rtx-4090",
        {"width": 1280, "height": 900},
        "dark",
        None,
    ),
)


def take(base: str, out: Path, chromium: str = CHROMIUM) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with launch_chromium(chromium) as browser:
        for name, query, viewport, scheme, anchor in SHOTS:
            phone = viewport["width"] < 600
            context = browser.new_context(
                viewport=viewport,
                color_scheme=scheme,
                device_scale_factor=2 if phone else 1,
                is_mobile=phone,
                has_touch=phone,
            )
            page = context.new_page()
            load(page, base + "/" + query)
            if anchor:
                page.evaluate(
                    "sel => { const el = document.querySelector(sel).closest('.card, .field') || "
                    "document.querySelector(sel); window.scrollTo(0, el.getBoundingClientRect().top "
                    "+ window.scrollY - (window.innerWidth < 600 ? 150 : 8)); }",
                    anchor,
                )
            page.wait_for_timeout(400)
            path = out / name
            page.screenshot(path=str(path))
            _shrink(path)
            written.append(path)
            context.close()
    return written


def _shrink(path: Path) -> None:
    """Quantize the PNG to a palette when Pillow is around (screenshots stay a few hundred kB)."""
    try:
        from PIL import Image  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="base URL of a running app (default: start one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    if args.url:
        paths = take(args.url.rstrip("/"), args.out, args.chromium)
    else:
        with tempfile.TemporaryDirectory() as data, serve(create_app(Settings(data_dir=Path(data)))) as base:
            paths = take(base, args.out, args.chromium)
    for path in paths:
        print(f"{path} {path.stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
