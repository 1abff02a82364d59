"""An embeddings request as a client may send it: OpenAI's fields only (the SDK's own list), each
of its type, within OpenAI's limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_type_hints

from openai.types import embedding_create_params as _params

from gateway.translate.check import FieldError, check

__all__ = ["EMBEDDING_FIELDS", "MAX_INPUTS", "check_embeddings_request"]

_HINTS: Final = get_type_hints(_params.EmbeddingCreateParams)
EMBEDDING_FIELDS: Final = frozenset(_HINTS)
MAX_INPUTS: Final = 2048  # OpenAI's limit on inputs per request


def check_embeddings_request(body: Mapping[str, Any]) -> None:
    """Raise a :class:`FieldError` (an ``InvalidRequestError``) naming the first field that is
    not as OpenAI's API has it."""
    if not isinstance(body.get("input"), (str, list)):
        raise FieldError("input", "is required: a string, a list of strings or token ids")
    for key, value in body.items():
        if key not in EMBEDDING_FIELDS:
            raise FieldError(key, "is not an embeddings parameter this gateway accepts", "unsupported_parameter")
        check(value, _HINTS[key], (key,))
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise FieldError("model", "is required: a string")
    given = body["input"]
    if given in ("", []):
        raise FieldError("input", "is required: a string, a list of strings or token ids")
    if isinstance(given, list) and len(given) > MAX_INPUTS:
        raise FieldError("input", f"holds {len(given)} inputs; the limit is {MAX_INPUTS}")
    dimensions = body.get("dimensions")
    if dimensions is not None and not 1 <= dimensions <= 65536:
        raise FieldError("dimensions", "must be between 1 and 65536")
