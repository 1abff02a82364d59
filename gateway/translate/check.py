"""Checking one piece of a request against the SDK's own type for it.

The translators dispatch on each item's discriminator (``type``, ``role``) by hand, because they
must translate each kind differently; then the item is checked against the SDK's TypedDict for
that one kind, so an error names a field of the item the client sent rather than listing every
member of a union it did not mean.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gateway import sdk_types
from gateway.errors import InvalidRequestError
from gateway.policy.loader import format_loc

__all__ = ["FieldError", "check", "loc_str"]

Loc = tuple[int | str, ...]


class FieldError(InvalidRequestError):
    """A request field that is wrong, named by its path in the client's own request."""

    def __init__(self, loc: Loc | str, message: str, code: str | None = None) -> None:
        param = loc if isinstance(loc, str) else loc_str(loc)
        super().__init__(f"{param}: {message}" if param else message, param=param, code=code)


def loc_str(loc: Loc) -> str:
    return format_loc(list(loc))


def check(value: Any, tp: Any, loc: Loc) -> None:
    """Raise :class:`FieldError` unless ``value`` is a valid ``tp`` (strictly: no coercion)."""
    try:
        sdk_types.adapter(tp, "ignore").validate_python(value, strict=True)
    except ValidationError as exc:
        raise _field_error(exc, value, loc) from None


def _field_error(exc: ValidationError, value: Any, loc: Loc) -> FieldError:
    found = sdk_types.problem(exc, value)
    return FieldError((*loc, *found.loc), found.message)
