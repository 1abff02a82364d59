"""Checking one piece of a request against the SDK's own type for it.

The translators dispatch on each item's discriminator (``type``, ``role``) by hand, because they
must translate each kind differently; then the item is checked against the SDK's TypedDict for
that one kind, so an error names a field of the item the client sent rather than listing every
member of a union it did not mean.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.policy.loader import format_loc

__all__ = ["FieldError", "check", "loc_str"]

Loc = tuple[int | str, ...]


class FieldError(Exception):
    """A request field that is wrong; each API turns it into its own error envelope."""

    def __init__(self, loc: Loc | str, message: str, code: str | None = None) -> None:
        self.param = loc if isinstance(loc, str) else loc_str(loc)
        self.message = f"{self.param}: {message}" if self.param else message
        self.code = code
        super().__init__(self.message)


def loc_str(loc: Loc) -> str:
    return format_loc(list(loc))


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def check(value: Any, tp: Any, loc: Loc) -> None:
    """Raise :class:`FieldError` unless ``value`` is a valid ``tp`` (strictly: no coercion)."""
    try:
        _drain(_adapter(tp).validate_python(value, strict=True), loc)
    except ValidationError as exc:
        raise _field_error(exc, loc) from None


def _drain(value: Any, loc: Loc) -> None:
    """The SDK types lists as ``Iterable[...]``, which pydantic checks lazily: walk the result."""
    if isinstance(value, dict):
        for key, item in value.items():
            _drain(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _drain(item, (*loc, i))
    elif isinstance(value, Iterator):
        try:
            for i, item in enumerate(value):
                _drain(item, (*loc, i))
        except ValidationError as exc:  # its location starts at the item's index
            raise _field_error(exc, loc) from None


def _field_error(exc: ValidationError, loc: Loc) -> FieldError:
    errors = exc.errors()
    # A union reports one error per member: a member whose tag (``type``) the value does not
    # match fails on that literal; the member it does match names the real problem.
    err = next((e for e in errors if e["type"] != "literal_error"), errors[0])
    # Union-branch labels (class names, ``str``, ``list[...]``) are pydantic's, not the client's.
    where = [p for p in err["loc"] if isinstance(p, int) or not (p[:1].isupper() or "[" in p or p == "str")]
    return FieldError((*loc, *where), str(err["msg"]))
