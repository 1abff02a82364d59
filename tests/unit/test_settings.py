"""Settings: the one reader of the environment; relative paths mean the working directory's."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import REPO_ROOT, Settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.policy_path == REPO_ROOT / "policies" / "default.yaml"
    assert s.database_url == f"sqlite:///{tmp_path / 'tierwise.db'}" and s.sqlite_file == tmp_path / "tierwise.db"
    monkeypatch.setenv("TIERWISE_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("TIERWISE_PORT", "9999")
    monkeypatch.setenv("TIERWISE_LOCAL_PORT", "9090")
    monkeypatch.setenv("TIERWISE_POLICY_PATH", "mine.yaml")
    s = Settings()
    assert (s.database_url, s.port, s.local.port, s.sqlite_file) == ("postgresql://u@h/db", 9999, 9090, None)
    assert s.policy_path == tmp_path / "mine.yaml"
    assert Settings(port=1234).port == 1234  # explicit values (the CLI's flags) win over the environment


def test_credentials_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_KEY", "sk-123")
    monkeypatch.setenv("EMPTY_KEY", "")
    assert Settings.credential("SOME_PROVIDER_KEY") == "sk-123"
    assert Settings.credential("EMPTY_KEY") is None and Settings.credential("ABSENT_KEY") is None
