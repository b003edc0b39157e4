"""docs/schema.md's plan-field table and example, generated from the code they document.

    python -m bench.schema_doc           # rewrite the generated parts of docs/schema.md
    python -m bench.schema_doc --check   # exit 1 if they are out of date (tests/test_docs.py runs this)

The table lists every field of ``estimator.Plan`` from its declaration (kind, default, allowed values, help); the
example is ``tuneplan estimate llama-3.1-8b --json``, abridged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from estimator import Plan, PlanField, estimate, plan_fields

DOC = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
MARKS = {
    "fields": ("<!-- plan-fields:start (python -m bench.schema_doc) -->", "<!-- plan-fields:end -->"),
    "example": ("<!-- example:start (python -m bench.schema_doc) -->", "<!-- example:end -->"),
}


def _default(f: PlanField) -> str:
    value = ",".join(f.default) if isinstance(f.default, tuple) else f.default
    return "—" if value in (None, "") else f"`{json.dumps(value)}`"


def fields_table() -> str:
    rows = ["| field | kind | default | allowed | applies to | meaning |", "|---|---|---|---|---|---|"]
    for f in plan_fields():
        s = f.spec
        allowed = f.bounds_text() or ("a list of module names" if s.kind == "modules" else "")
        if s.kind == "targets":
            allowed = "`all-linear` or a list of module names"
        methods = ", ".join(s.methods) if s.methods else "all"
        rows.append(f"| `{f.name}` | {s.kind} | {_default(f)} | {allowed} | {methods} | {s.help} |")
    return "\n".join(rows)


def _abridge(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        return {k: _abridge(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_abridge(v, depth + 1) for v in value[:2]]
    return value


def example() -> str:
    contract = estimate(Plan(model="llama-3.1-8b")).to_dict()
    return "```json\n" + json.dumps(_abridge(contract), indent=1, ensure_ascii=False) + "\n```"


def render(text: str) -> str:
    for key, body in (("fields", fields_table()), ("example", example())):
        start, end = MARKS[key]
        head, found, rest = text.partition(start)
        if not found:
            raise SystemExit(f"{DOC}: marker {start!r} missing")
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check that the generated parts are current")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{DOC} is out of date: run python -m bench.schema_doc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
