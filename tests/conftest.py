"""Shared fixtures: project paths and the embedded default's settings in a temp state dir."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossvisor.core.config import Settings  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.home = tmp_path / "state"
    s.home.mkdir()
    return s


@pytest.fixture
def root() -> Path:
    return ROOT
