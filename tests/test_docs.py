"""Docs generated from the code stay current: docs/schema.md's plan-field table and example."""

from __future__ import annotations

from bench import schema_doc


def test_schema_doc_is_current() -> None:
    current = schema_doc.DOC.read_text()
    assert schema_doc.render(current) == current, "docs/schema.md is out of date: run python -m bench.schema_doc"


def test_the_field_table_lists_every_plan_field() -> None:
    from estimator import plan_fields

    table = schema_doc.fields_table()
    assert all(f"| `{f.name}` |" in table for f in plan_fields())
