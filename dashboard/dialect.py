"""SQL the two ledger databases spell differently (SQLite, PostgreSQL): time buckets, floors and
reads of the JSON kept in text columns. Everything else in the queries is portable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, cast, func
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Join, UnaryExpression

__all__ = ["epoch_bucket", "floor_int", "json_key_float", "outer_first", "unindexed"]


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


def json_key_float(engine: Engine, col: Any, key: Any) -> ColumnElement[float]:
    """``col[key]`` as a number, of a JSON object kept as text, the key taken from a column."""
    if _sqlite(engine):
        return cast(func.json_extract(col, '$."' + key + '"'), Float)
    return cast(func.json_extract_path_text(cast(col, JSON), key), Float)


def unindexed(engine: Engine, col: Any) -> ColumnElement[Any]:
    """``col``, hidden from SQLite's planner (a unary +, which changes no value): without
    statistics it would walk that column's index over the whole ledger, for a GROUP BY or a
    joined table's time window, instead of the few rows another index finds. PostgreSQL plans
    on statistics."""
    if _sqlite(engine):
        return UnaryExpression(col, operator=operators.custom_op("+"), type_=col.type)
    return col  # type: ignore[no-any-return]


class _OuterFirst(Join):
    inherit_cache = True


@compiles(_OuterFirst, "sqlite")
def _cross_join(join: _OuterFirst, compiler: SQLCompiler, **kw: Any) -> str:
    kw["asfrom"] = True
    left, right = compiler.process(join.left, **kw), compiler.process(join.right, **kw)
    assert join.onclause is not None
    return f"{left} CROSS JOIN {right} ON {compiler.process(join.onclause, **kw)}"


def outer_first(left: Any, right: Any, onclause: Any) -> Join:
    """An inner join that SQLite runs with ``left`` as its outer loop (its CROSS JOIN): the few
    judgements or feedback rows, each looking up its request, rather than every request looking
    for a judgement. Without statistics SQLite takes every table to be as big as the ledger."""
    return _OuterFirst(left, right, onclause)
