"""The spend ledger: table, engine and the batched writer."""

from gateway.ledger.db import create_schema, make_engine, normalise_url
from gateway.ledger.models import LedgerEntry
from gateway.ledger.writer import LedgerWriter

__all__ = ["LedgerEntry", "LedgerWriter", "create_schema", "make_engine", "normalise_url"]
