"""Client JSON Schemas, with the work they can cause bounded by construction.

A schema comes from the client (``response_format.json_schema``, a tool's ``parameters``) and the
answer it is checked against comes from a model the client can steer, so both are hostile input.
Validation work can grow exponentially in the schema's size: ``$defs`` whose ``anyOf`` entries
each ``$ref`` the next level twice double the work per level (24 levels fit in 1.8 KB), and
jsonschema keeps every branch's errors, so memory grows with it. Two bounds:

1. **A budget on the schema** (:func:`over_budget`), cheap and linear in the schema's size: its
   node count once every local ``$ref`` is expanded. The expansion is counted, never built (one
   count per definition, memoised); a definition that refers to itself is counted once, since
   its work is bounded by the answer's depth, which the next bound covers.
2. **A budget on the validation itself**: every keyword jsonschema evaluates is a step, and a
   validation stops at :data:`OFF_LOOP_STEPS`. Steps alone do not bound the cost (one ``enum``
   step compares with every entry and writes them all into its error message), so only small
   checks run on the event loop, with :data:`INLINE_STEPS`; the rest run in a process with a
   time and a memory limit (:mod:`gateway.quality.sandbox`).

A schema over either budget is not the answer's fault: its check is skipped, with the reason.
``pattern`` and ``patternProperties`` are never run (a client's regular expression could
backtrack without bound), and no ``$ref`` leaves the schema (nothing is fetched or read).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator, extend
from referencing import Registry

__all__ = [
    "INLINE_STEPS",
    "MAX_EXPANDED_NODES",
    "OFF_LOOP_STEPS",
    "OverBudget",
    "Steps",
    "over_budget",
    "validates",
]

MAX_EXPANDED_NODES = 20_000
"""Schema nodes after ``$ref`` expansion. OpenAI's structured outputs allow 5,000 object
properties and 10 levels of nesting in a strict schema; this leaves room for non-strict ones."""

INLINE_STEPS = 500  # keyword evaluations on the event loop: 2-8 ms (jsonschema takes 4-15 µs a step)
OFF_LOOP_STEPS = 20_000  # the most one answer's checks may take, in the sandbox: 0.1-0.3 s


class OverBudget(Exception):
    """A check ran out of steps; ``steps`` is the budget it had."""

    def __init__(self, steps: int) -> None:
        super().__init__(f"the schema check needs more than {steps:,} steps")
        self.steps = steps


class Steps:
    """A budget of keyword evaluations, shared by every validation of one answer (an answer
    can carry many tool calls)."""

    __slots__ = ("budget", "left")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.left = budget

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise OverBudget(self.budget)


# -- the budget on the schema -----------------------------------------------------------------
def over_budget(schema: Any, limit: int = MAX_EXPANDED_NODES) -> str | None:
    """Why the schema is too costly to check (None: it is within budget)."""
    counter = _Expansion(schema, limit)
    try:
        nodes = counter.count(schema)
    except (_TooMany, RecursionError):  # RecursionError: a $ref chain longer than Python's stack
        nodes = limit + 1
    if nodes > limit:
        return f"the schema expands to more than {limit:,} nodes through its $refs"
    return None


class _TooMany(Exception):
    pass


class _Expansion:
    """Counts the nodes a schema has once its local ``$ref`` s are expanded (each definition's
    count computed once), giving up as soon as the count passes the limit."""

    def __init__(self, root: Any, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.done: dict[str, int] = {}
        self.open: set[str] = set()

    def count(self, node: Any) -> int:
        total = 1
        # An explicit stack for the walk; recursion is only through $ref, bounded by `open`.
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                ref = item.get("$ref")
                if isinstance(ref, str):
                    total += self._ref(ref)
                values: Iterator[Any] = iter(item.values())
            elif isinstance(item, list):
                values = iter(item)
            else:
                continue
            for value in values:
                if isinstance(value, (dict, list)):
                    total += 1
                    stack.append(value)
            if total > self.limit:
                raise _TooMany
        return total

    def _ref(self, ref: str) -> int:
        if ref in self.done:
            return self.done[ref]
        if ref in self.open:  # a recursive definition: its depth is the answer's
            return 1
        target = _local(self.root, ref)
        if target is None:
            return 1  # unresolvable: the check will not use this schema at all
        self.open.add(ref)
        try:
            n = self.count(target)
        finally:
            self.open.discard(ref)
        self.done[ref] = n
        return n


def _local(root: Any, ref: str) -> Any:
    """The target of a ``#/a/b`` JSON pointer inside the schema (RFC 6901), else None."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# -- the budget on the validation -------------------------------------------------------------
_steps: contextvars.ContextVar[Steps] = contextvars.ContextVar("schema_steps")


def _counted(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def step(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _steps.get().take()
        return keyword(validator, value, instance, schema)

    return step


def _skip(*_: Any) -> None:
    return None


# Draft 2020-12, each keyword counted, without the keywords that run the client's regexes.
_Validator = extend(
    Draft202012Validator,
    {
        **{name: _counted(fn) for name, fn in Draft202012Validator.VALIDATORS.items()},
        "pattern": _skip,
        "patternProperties": _skip,
    },
)
_NO_REMOTE = Registry()  # resolves nothing: a $ref outside the schema is unresolvable, not fetched


def validates(value: Any, schema: dict[str, Any], steps: Steps) -> bool:
    """Whether the value fits the schema, taking one of ``steps`` per keyword evaluated (none
    left: :class:`OverBudget`); True when the schema itself cannot be used (unresolvable
    ``$ref``, unknown type): a broken schema is the client's problem, not the answer's."""
    token = _steps.set(steps)
    try:
        error = next(_Validator(schema, registry=_NO_REMOTE).iter_errors(value), None)
    except (OverBudget, MemoryError):
        raise
    except (jsonschema.SchemaError, RecursionError, Exception):  # unresolvable $ref, broken schema
        return True
    finally:
        _steps.reset(token)
    return error is None
