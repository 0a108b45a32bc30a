"""Shared fixtures: one tiny editor per session (building it costs seconds), small synthetic clips."""

from __future__ import annotations

import pytest

from kvlock import Editor


@pytest.fixture(scope="session")
def editor() -> Editor:
    """The random-weight tiny Wan: every exactness property holds for any weights, and it is fastest."""
    return Editor.from_pretrained("tiny-random")
