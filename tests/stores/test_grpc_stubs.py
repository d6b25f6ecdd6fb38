"""The committed gRPC stubs are what `scripts/generate_grpc.py` makes of the committed .proto:
regenerated into a temporary directory, every file must be identical (else run the script)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.grpc

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "scripts/generate_grpc.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    fresh = script.generate(tmp_path)
    assert len(fresh) == 3
    committed = ROOT / "src/eventsource/_proto/eventsource/store/v1"
    for path in fresh:
        assert (committed / path.name).read_text() == path.read_text(), (
            f"{path.name} is stale: run `uv run python scripts/generate_grpc.py` and commit"
        )
