"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from specprefill_agents.testing import tiny_draft


@pytest.fixture(scope="session")
def draft_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama draft saved to disk, as the command line loads it."""
    path = tmp_path_factory.mktemp("tiny-draft")
    draft = tiny_draft("llama")
    draft.model.save_pretrained(path)
    draft.tokenizer.save_pretrained(path)
    return str(path)
