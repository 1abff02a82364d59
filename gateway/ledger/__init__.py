"""The spend ledger: table, engine and the batched writer."""

from gateway.ledger.db import NoLedger, create_schema, make_engine, normalise_url, read_engine
from gateway.ledger.models import LedgerEntry
from gateway.ledger.writer import LedgerWriter

__all__ = [
    "LedgerEntry",
    "LedgerWriter",
    "NoLedger",
    "create_schema",
    "make_engine",
    "normalise_url",
    "read_engine",
]
