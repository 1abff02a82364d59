"""The SDKs' request types (openai's, anthropic's), rebuilt so that pydantic checks a body in one pass.

The SDK types its parameters for callers, not for checking what arrives: lists are
``Iterable[...]`` (which pydantic validates lazily, one item at a time, as the result is walked),
TypedDicts ignore keys they do not declare, and unions of messages, parts and tools are plain
unions (each member reports its own errors). The same types are rebuilt here with lists as
lists, undeclared keys refused (or dropped), and each union whose members fix one key to a
literal (``role``, ``type``) dispatched on that key, so only the member the value names is tried.
"""

from __future__ import annotations

import collections.abc
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required, Union, cast, get_args, get_origin, get_type_hints

from pydantic import ConfigDict, Discriminator, Tag, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict, is_typeddict

__all__ = ["Problem", "adapter", "problem"]

_WRONG_TAG = "wrong_tag:"

Extra = Literal["forbid", "ignore"]


@functools.cache
def adapter(tp: Any, extra: Extra = "forbid") -> TypeAdapter[Any]:
    """A validator for the SDK type ``tp``; call it with ``strict=True`` (no coercion)."""
    return TypeAdapter(_Rebuild(extra).type(tp))


class _Rebuild:
    def __init__(self, extra: Extra) -> None:
        self.extra = extra
        self.done: dict[int, Any] = {}

    def type(self, tp: Any) -> Any:
        if is_typeddict(tp):
            return self._typeddict(tp)
        origin, args = get_origin(tp), get_args(tp)
        if origin is None or origin is Literal:
            return tp
        if origin is collections.abc.Iterable:
            return list[self.type(args[0])]  # type: ignore[misc]
        if origin in (Union, types.UnionType):
            return self._union(args)
        if origin is Annotated:
            return Annotated[(self.type(args[0]), *tp.__metadata__)]
        if origin in (Required, NotRequired):
            return origin[self.type(args[0])]
        return origin[tuple(self.type(a) for a in args)] if len(args) > 1 else origin[self.type(args[0])]

    def _typeddict(self, tp: Any) -> Any:
        if id(tp) not in self.done:
            fields = {k: self.type(ann) for k, ann in get_type_hints(tp, include_extras=True).items()}
            rebuilt = TypedDict(tp.__name__, fields, total=tp.__total__)  # type: ignore[misc]
            config = cast(ConfigDict, {**getattr(tp, "__pydantic_config__", {}), "extra": self.extra})  # SDK's kept
            self.done[id(tp)] = with_config(config)(rebuilt)
        return self.done[id(tp)]

    def _union(self, members: tuple[Any, ...]) -> Any:
        dicts = [m for m in members if is_typeddict(m)]
        key = _common_tag(dicts) if len(dicts) > 1 else None
        if key is None:
            return Union[tuple(self.type(m) for m in members)]  # noqa: UP007 - built at run time
        tags = {str(_literal(m, key)): m.__name__ for m in dicts}
        tagged: Any = Union[tuple(Annotated[self.type(m), Tag(m.__name__)] for m in dicts)]  # noqa: UP007
        dispatch = Discriminator(
            _dispatch(key, tags),
            # the key travels in the error's type: a context dict would make the union unhashable
            custom_error_type=_WRONG_TAG + key,
            custom_error_message=f"is not one of {', '.join(map(repr, sorted(tags)))}",
        )
        others = [self.type(m) for m in members if not is_typeddict(m)]
        return Union[(*others, Annotated[tagged, dispatch])]


@dataclass(frozen=True)
class Problem:
    """What is wrong with a value, in the client's terms."""

    loc: tuple[int | str, ...]  # the path in the value sent (pydantic's union labels removed)
    message: str
    unknown_key: bool  # a key the type does not declare


def problem(exc: ValidationError, value: Any) -> Problem:
    """The first of pydantic's errors that is about the value sent: a ``str | list`` union reports
    one error per member, and only the member the value is has the useful one."""
    errors = exc.errors()
    err = next((e for e in errors if _member_matches(e["loc"], value)), errors[0])
    loc = _path(err["loc"], value)
    kind = str(err["type"])
    if kind == "extra_forbidden":
        return Problem(loc, "not a field of this part of the API", unknown_key=True)
    if kind.startswith(_WRONG_TAG):
        node = _value_at(value, loc)
        if not isinstance(node, dict):
            return Problem(loc, "must be an object", unknown_key=False)
        key = kind.removeprefix(_WRONG_TAG)
        return Problem((*loc, key), f"{node.get(key)!r} {err['msg']}", unknown_key=False)
    return Problem(loc, str(err["msg"]), unknown_key=False)


def _path(loc: tuple[int | str, ...], value: Any) -> tuple[int | str, ...]:
    """Pydantic's error location as a path in the value sent: union-member labels left out."""
    path: list[int | str] = []
    node = value
    for part in loc:
        if not _is_label(part, node):
            path.append(part)
            node = _value_at(node, (part,))
    return tuple(path)


def _member_matches(loc: tuple[int | str, ...], value: Any) -> bool:
    node = value
    for part in loc:
        if not _is_label(part, node):
            node = _value_at(node, (part,))
        elif part == "str" or str(part).startswith("literal["):
            if not isinstance(node, (str, int, float)):
                return False
        elif str(part).startswith("list[") and not isinstance(node, list):
            return False
    return True


def _is_label(part: int | str, node: Any) -> bool:
    """A union-member label pydantic puts in locations (class names, ``str``, ``list[...]``),
    not a key of the object the location has reached (a client's ``{"Name": ...}``)."""
    shaped = isinstance(part, str) and (part[:1].isupper() or "[" in part or part == "str")
    return shaped and not (isinstance(node, dict) and part in node)


def _value_at(root: Any, path: tuple[int | str, ...]) -> Any:
    node = root
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _dispatch(key: str, tags: dict[str, str]) -> Callable[[Any], str | None]:
    def member(value: Any) -> str | None:
        tag = value.get(key) if isinstance(value, dict) else None
        return tags.get(tag) if isinstance(tag, str) else None

    return member


def _literal(tp: Any, key: str) -> str | None:
    ann = get_type_hints(tp).get(key)
    if get_origin(ann) is Literal and len(get_args(ann)) == 1 and isinstance(get_args(ann)[0], str):
        return str(get_args(ann)[0])
    return None


def _common_tag(members: list[Any]) -> str | None:
    """The key every member fixes to its own literal, if there is one."""
    for key in get_type_hints(members[0]):
        values = [_literal(m, key) for m in members]
        if None not in values and len(set(values)) == len(values):
            return key
    return None
