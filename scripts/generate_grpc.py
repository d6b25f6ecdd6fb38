"""Regenerate the committed Python stubs of the gRPC store service from its .proto.

    uv run python scripts/generate_grpc.py

The .proto lives at `src/eventsource/_proto/eventsource/store/v1/store.proto`, under its proto
package path (`eventsource.store.v1`), so other languages import it as
`eventsource/store/v1/store.proto`. protoc writes Python imports from that path
(`from eventsource.store.v1 import store_pb2`); they are rewritten to the module's place in
this package (`eventsource._proto.eventsource.store.v1`). tests/stores/test_grpc_stubs.py
regenerates into a temporary directory and fails when the committed stubs differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "src" / "eventsource" / "_proto"
PROTO = "eventsource/store/v1/store.proto"
GENERATED = ("store_pb2.py", "store_pb2.pyi", "store_pb2_grpc.py")
_IMPORT = "from eventsource.store.v1 import store_pb2"
_PACKAGED = "from eventsource._proto.eventsource.store.v1 import store_pb2"


def generate(out_dir: Path) -> list[Path]:
    """Write the stubs under `out_dir` (at `eventsource/store/v1/`); the files written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    written = [out_dir / Path(PROTO).parent / name for name in GENERATED]
    for path in written:
        text = path.read_text()
        path.write_text(text.replace(_IMPORT, _PACKAGED))
    return written


def main() -> int:
    for path in generate(PROTO_ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
