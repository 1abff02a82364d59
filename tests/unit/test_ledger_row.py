"""The row the pipeline builds is exactly the ledger table's row."""

from __future__ import annotations

from dataclasses import fields

from gateway.ledger.models import LedgerEntry, LedgerRow


def test_row_fields_are_the_table_columns() -> None:
    columns = {c.name for c in LedgerEntry.__table__.columns} - {"id"}  # type: ignore[attr-defined]
    assert {f.name for f in fields(LedgerRow)} == columns
