"""Secrets never leave in a message: provider keys and key-shaped strings are blanked out of
upstream error texts (which some upstreams fill with our own request headers) and log lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["RedactingFilter", "install_redaction", "redact", "uninstall_redaction"]

# Bearer tokens, "sk-..."-style keys, and long runs of key alphabet (32+ characters) mixing upper
# and lower case and digits as random keys do; paths, hex digests and version names do not.
_KEYLIKE = re.compile(r"(?i)(bearer\s+)\S+|\b(?:sk|pk|rk|key|api|tw)[-_][A-Za-z0-9_\-]{8,}|([A-Za-z0-9_\-+/=]{32,})")


def _blank(m: re.Match[str]) -> str:
    run = m.group(2)
    if run is not None and not (
        any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)
    ):
        return run
    return (m.group(1) or "") + "[redacted]"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub(_blank, text)


class RedactingFilter(logging.Filter):
    """Blanks secrets out of every record a handler emits (installed on the root handlers)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Put one filter on every handler that exists now (root's and uvicorn's); returns it so the
    caller can update its secrets when the policy names new keys."""
    flt = RedactingFilter(secrets)
    for handler in _handlers():
        handler.addFilter(flt)
    return flt


def uninstall_redaction(flt: RedactingFilter) -> None:
    for handler in _handlers():
        handler.removeFilter(flt)


def _handlers() -> list[logging.Handler]:
    return [
        h for name in (None, "uvicorn", "uvicorn.error", "uvicorn.access") for h in logging.getLogger(name).handlers
    ]
