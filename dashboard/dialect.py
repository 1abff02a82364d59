"""SQL the two ledger databases spell differently (SQLite, PostgreSQL): time buckets, floors and
reads of the JSON kept in text columns. Everything else in the queries is portable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, cast, func
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

__all__ = ["epoch_bucket", "floor_int", "json_item", "json_key_float", "json_length"]


def _sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def epoch_bucket(engine: Engine, col: Any, seconds: int) -> ColumnElement[int]:
    """The start of ``col``'s bucket of ``seconds``, as Unix seconds (UTC)."""
    if _sqlite(engine):
        return cast(func.strftime("%s", col), BigInteger) // seconds * seconds
    return cast(func.floor(func.extract("epoch", col) / seconds) * seconds, BigInteger)


def floor_int(engine: Engine, value: Any) -> ColumnElement[int]:
    """floor() of a non-negative number (SQLite truncates on cast; PostgreSQL would round)."""
    if _sqlite(engine):
        return cast(value, Integer)
    return cast(func.floor(value), Integer)


def json_length(engine: Engine, col: Any) -> ColumnElement[int]:
    """Length of a JSON array kept as text."""
    if _sqlite(engine):
        return func.json_array_length(col, type_=Integer)
    return func.json_array_length(cast(col, JSON), type_=Integer)


def json_item(engine: Engine, col: Any, index: int, key: str) -> ColumnElement[str]:
    """``col[index][key]`` as text, of a JSON array of objects kept as text (NULL when absent)."""
    if _sqlite(engine):
        return func.json_extract(col, f'$[{index}]."{key}"')
    return func.json_extract_path_text(cast(col, JSON), str(index), key)


def json_key_float(engine: Engine, col: Any, key: Any) -> ColumnElement[float]:
    """``col[key]`` as a number, of a JSON object kept as text, the key taken from a column."""
    if _sqlite(engine):
        return cast(func.json_extract(col, '$."' + key + '"'), Float)
    return cast(func.json_extract_path_text(cast(col, JSON), key), Float)
