"""Execute the code in README.md and docs/*.md, and check the links between them.

Rules for the docs, enforced here:

- Blocks fenced as ```python run; ```py, ```bash, ```text and others are shown, not run.
- The blocks of one file run in order in one namespace (a fresh module per file): a block may
  use what an earlier block of the same file defined; files never see each other's names.
- Top-level `await` is not allowed: put async code in a function and call `asyncio.run`.
- Event classes a file adds to `default_registry` are unregistered after the file ran, so
  files may reuse event names and the rest of the suite sees the registry unchanged.
- Code runs in a temporary working directory: files it writes are thrown away.
- A page whose code uses the schema `eventsource_docs` needs PostgreSQL (skipped without it,
  failed under EVENTSOURCE_REQUIRE_SERVICES=1); the schema is dropped before and after it, and
  the code reads the database URL from DATABASE_URL, set here to the test database.
- Every docs/*.md is linked from docs/index.md; every relative link points to a file.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventsource import default_registry
from tests import _services

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
ALL_FILES = [README, *DOC_FILES]

_FENCE = re.compile(r"^(`{3,})(\S*)\s*$")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Block:
    language: str
    first_line: int  # 1-based number of the block's first code line
    closing_line: int  # number of the closing fence
    source: str


_DOCS_SCHEMA = "eventsource_docs"


def _drop_docs_schema() -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(_services.POSTGRES_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {_DOCS_SCHEMA} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with their language tags."""
    found: list[Block] = []
    fence: str | None = None
    language = ""
    start = 0
    lines: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                fence, language, start, lines = match.group(1), match.group(2), number + 1, []
        elif line.strip() == fence:
            found.append(Block(language, start, number, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    assert fence is None, f"{path.name}: a code block opened at line {start - 1} is never closed"
    return found


def python_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.language == "python"]


def prose(path: Path) -> str:
    """The file without its fenced code blocks (links inside code are not links)."""
    text = path.read_text(encoding="utf-8").splitlines()
    skipped = {n for b in blocks(path) for n in range(b.first_line - 1, b.closing_line + 1)}
    return "\n".join(line for n, line in enumerate(text, start=1) if n not in skipped)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "docs_example_" + re.sub(r"\W", "_", _id(path))
    module = types.ModuleType(name)
    module.__file__ = str(path)
    registered_before = set(default_registry.list_types())
    monkeypatch.chdir(tmp_path)
    needs_postgres = any(_DOCS_SCHEMA in block.source for block in python_blocks(path))
    if needs_postgres:
        _services.require(_services.POSTGRES)
        monkeypatch.setenv("DATABASE_URL", _services.POSTGRES_URL)
        _drop_docs_schema()
    sys.modules[name] = module  # pydantic and dataclasses look classes' modules up here
    try:
        for block in python_blocks(path):
            # Padding keeps line numbers: a traceback points at the line in the .md file.
            source = "\n" * (block.first_line - 1) + block.source
            exec(compile(source, str(path), "exec"), module.__dict__)
    finally:
        del sys.modules[name]
        if needs_postgres:
            _drop_docs_schema()
        for event_type in set(default_registry.list_types()) - registered_before:
            default_registry.unregister(event_type)


@pytest.mark.parametrize("path", [README, DOCS / "getting-started.md"], ids=_id)
def test_entry_points_have_runnable_examples(path: Path) -> None:
    assert python_blocks(path), f"{_id(path)} has no ```python block to run"


def test_docs_exist() -> None:
    assert DOC_FILES, "docs/ holds no .md file"
    assert (DOCS / "index.md") in DOC_FILES


def test_index_links_every_doc() -> None:
    index = DOCS / "index.md"
    linked = {
        (DOCS / target.split("#")[0]).resolve()
        for target in _LINK.findall(prose(index))
        if "://" not in target and not target.startswith("#")
    }
    missing = [_id(doc) for doc in DOC_FILES if doc != index and doc.resolve() not in linked]
    assert not missing, f"docs/index.md does not link to {missing}"


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_relative_links_point_to_files(path: Path) -> None:
    broken = []
    for target in _LINK.findall(prose(path)):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{_id(path)}: links to missing files: {broken}"
