"""The judge's protocol: a fixed rubric, two answers compared in both orders (to cancel the
judge's preference for a position), a verdict parsed from a fixed form, or "unparseable".

The score of the cheaper answer is how it fared against the dearer one: a game it won or tied
counts as "not beaten" (the cheaper answer was good enough), as Arena-Hard scores challengers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.chat_request import message_text

__all__ = ["RUBRIC", "Outcome", "combine", "judge_messages", "parse_verdict"]

RUBRIC = """You are an impartial judge. Two AI assistants answered the same user request. Decide which \
answer serves the user better: correct, complete and following the request's instructions (format, \
length, language). Do not prefer an answer for being longer, for its position, or for its style.

Think briefly, then end with exactly one verdict on its own line:
[[A>B]] if answer A is better, [[B>A]] if answer B is better, [[A=B]] if they are equally good (or equally bad)."""

_VERDICT = re.compile(r"\[\[\s*(A\s*[>=<]\s*B|B\s*[>=<]\s*A)\s*\]\]")
# The verdict ends the judge's last line (markdown emphasis and a full stop may follow it).
_FINAL = re.compile(_VERDICT.pattern + r"[\s*_.]*$")
# What only the gateway may write into the judge's prompt: the verdict form and the section headers.
_MARKERS = re.compile(
    r"\[\[|\]\]|\[(?=\s*(?:User request|Answer [AB])\s*\])|(?<=User request)\]|(?<=Answer [AB])\]", re.I
)
_MAX_CHARS = 12_000  # of the conversation and of each answer shown to the judge


def _fenced(text: str) -> str:
    """Untrusted text (the request, the answers) with the prompt's markers made inert: a request
    that ends in ``[[A=B]]`` or fakes an ``[Answer B]`` section cannot speak for the judge."""
    return _MARKERS.sub(lambda m: m.group(0).replace("[", "(").replace("]", ")"), text)


def judge_messages(request_messages: Sequence[Mapping[str, Any]], answer_a: str, answer_b: str) -> list[dict[str, str]]:
    conversation = "\n".join(
        f"{m.get('role', 'user')}: {message_text(m.get('content'))}" for m in request_messages if isinstance(m, Mapping)
    )
    user = (
        f"[User request]\n{_fenced(conversation[-_MAX_CHARS:])}\n\n"
        f"[Answer A]\n{_fenced(answer_a[:_MAX_CHARS])}\n\n"
        f"[Answer B]\n{_fenced(answer_b[:_MAX_CHARS])}\n\n"
        "Your verdict:"
    )
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from the one verdict that ends the judge's answer, where the
    rubric tells it to put it; None when the last line holds none, or more than one."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    found = _VERDICT.findall(last)
    if len(found) != 1 or not _FINAL.search(last):
        return None
    v = re.sub(r"\s", "", found[-1])
    if "=" in v:
        return "tie"
    winner = v[0] if ">" in v else v[-1]
    return winner


@dataclass(frozen=True)
class Outcome:
    verdict: str  # for the cheaper answer: win | tie | loss | unparseable
    adequacy: float | None  # share of readable games the cheaper answer was not beaten in
    raw: tuple[str | None, str | None]  # the two parsed verdicts (cheaper first as A, then as B)


def combine(cheaper_as_a: str | None, cheaper_as_b: str | None) -> Outcome:
    """The two games, from the cheaper answer's side (points: win 1, tie 0.5, loss 0)."""
    points = []
    if cheaper_as_a is not None:
        points.append({"A": 1.0, "tie": 0.5, "B": 0.0}[cheaper_as_a])
    if cheaper_as_b is not None:
        points.append({"B": 1.0, "tie": 0.5, "A": 0.0}[cheaper_as_b])
    raw = (cheaper_as_a, cheaper_as_b)
    if not points:
        return Outcome("unparseable", None, raw)
    mean = sum(points) / len(points)
    verdict = "win" if mean > 0.5 else "tie" if mean == 0.5 else "loss"
    adequacy = sum(p > 0 for p in points) / len(points)
    return Outcome(verdict, adequacy, raw)
