"""docs/api.md is what docs/make_api.py writes from the client's docstrings today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

MAKER = Path(__file__).resolve().parents[2] / "docs" / "make_api.py"


def test_the_api_reference_is_current() -> None:
    """The committed reference matches the code's docstrings (else: run make docs)."""
    spec = importlib.util.spec_from_file_location("make_api", MAKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUTPUT.read_text() == module.render(), "docs/api.md is stale: run make docs"


def test_every_public_client_name_has_a_docstring() -> None:
    """No name the client exports, and no public method of its classes, lacks a docstring."""
    spec = importlib.util.spec_from_file_location("make_api", MAKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "(no docstring)" not in module.render()
