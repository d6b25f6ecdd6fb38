"""Run the ```py blocks of docs/nats.md (shown, not run by test_docs.py: they need NATS)
against the test server, as written except for their stream and bucket names: each `shop`
name becomes one of this test's own, deleted afterwards."""

from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import default_registry
from tests._nats import delete_streams
from tests.docs.test_docs import DOCS, blocks

pytestmark = [pytest.mark.docs, pytest.mark.nats]

PAGE = DOCS / "nats.md"


def test_nats_page_code_runs(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = [block for block in blocks(PAGE) if block.language == "py"]
    assert code, "docs/nats.md has no ```py block"
    own = f"es_test_docs_{uuid4().hex[:8]}"
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.chdir(tmp_path)
    name = "docs_example_nats"
    module = types.ModuleType(name)
    module.__file__ = str(PAGE)
    registered_before = set(default_registry.list_types())
    sys.modules[name] = module
    try:
        for block in code:
            source = "\n" * (block.first_line - 1) + block.source.replace('"shop', f'"{own}')
            exec(compile(source, str(PAGE), "exec"), module.__dict__)
    finally:
        del sys.modules[name]
        for event_type in set(default_registry.list_types()) - registered_before:
            default_registry.unregister(event_type)
        asyncio.run(delete_streams(nats_url, own, f"KV_{own}_snapshots", f"KV_{own}_checkpoints"))
