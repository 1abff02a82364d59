"""The row the pipeline builds is exactly the ledger table's row."""

from __future__ import annotations

import time
from dataclasses import fields

import pytest

from gateway.ledger.models import LedgerEntry, LedgerRow, new_request_id


def test_row_fields_are_the_table_columns() -> None:
    columns = {c.name for c in LedgerEntry.__table__.columns} - {"id"}  # type: ignore[attr-defined]
    assert {f.name for f in fields(LedgerRow)} == columns


def test_request_ids_sort_by_time_and_stay_unguessable(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for now_us in (1_700_000_000_000_000, 1_700_000_000_000_001, 1_900_000_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda now_us=now_us: now_us * 1000)
        ids += [new_request_id() for _ in range(50)]
    assert all(len(i) <= 64 and i.startswith("req_") for i in ids)  # the column's width
    # ordered by the time they were made (the unique index appends), however the random part falls
    assert [i[:17] for i in sorted(ids)] == [i[:17] for i in ids]
    assert len({i[17:] for i in ids}) == len(ids)  # 64 random bits each
