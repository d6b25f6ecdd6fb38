"""The getting-started page run twice in one directory, as a reader does: its `bank.db` from the
first run is still there, and the second run must work with it."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from eventsource import default_registry
from tests.docs.test_docs import DOCS, python_blocks

pytestmark = [pytest.mark.docs, pytest.mark.sqlite]

PAGE = DOCS / "getting-started.md"


def _run_page(run: int) -> None:
    name = f"docs_getting_started_run_{run}"
    module = types.ModuleType(name)
    module.__file__ = str(PAGE)
    registered_before = set(default_registry.list_types())
    sys.modules[name] = module
    try:
        for block in python_blocks(PAGE):
            source = "\n" * (block.first_line - 1) + block.source
            exec(compile(source, str(PAGE), "exec"), module.__dict__)
    finally:
        del sys.modules[name]
        for event_type in set(default_registry.list_types()) - registered_before:
            default_registry.unregister(event_type)


def test_getting_started_runs_again_on_its_own_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _run_page(1)
    assert (tmp_path / "bank.db").is_file()
    _run_page(2)
