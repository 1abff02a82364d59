"""What redaction blanks (anything key-shaped) and what it leaves readable (paths, digests, names)."""

from __future__ import annotations

from gateway.redact import redact


def test_keys_are_blanked() -> None:
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
    assert redact("bad key sk-proj-AbCdEf0123456789") == "bad key [redacted]"
    aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert redact(f"aws secret: {aws}!") == "aws secret: [redacted]!"
    assert redact("the policy's key is hunter2 here", ["hunter2"]) == "the policy's key is [redacted] here"


def test_paths_digests_and_versions_stay_readable() -> None:
    line = (
        "router static-minilm-l6-v2-2026-11-29-0123456789abcdef loaded from "
        "/work/main/router/artifacts/default sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )
    assert redact(line) == line
