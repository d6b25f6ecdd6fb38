"""The code of README.md and docs/*.md passes `mypy --strict`, as a user's code copied from
them would be checked: each page's ```python blocks become one module, every line at its line
number in the page, so an error points at the line in the .md file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.test_docs import ALL_FILES, ROOT, python_blocks

pytestmark = pytest.mark.docs


def _module_of(path: Path) -> str:
    """The page's Python code with blank lines where its prose is."""
    lines = [""] * len(path.read_text(encoding="utf-8").splitlines())
    for block in python_blocks(path):
        for offset, line in enumerate(block.source.splitlines()):
            lines[block.first_line - 1 + offset] = line
    return "\n".join(lines) + "\n"


def test_every_docs_example_passes_mypy_strict(tmp_path: Path) -> None:
    modules: dict[Path, Path] = {}
    for page in ALL_FILES:
        if python_blocks(page):
            stem = re.sub(r"\W", "_", page.stem)
            module = tmp_path / f"doc_{stem}.py"
            module.write_text(_module_of(page), encoding="utf-8")
            modules[module] = page
    assert len(modules) >= 10, "the docs should hold runnable examples"
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--no-error-summary", *map(str, modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    report = checked.stdout
    for module, page in modules.items():
        report = report.replace(str(module), str(page.relative_to(ROOT)))
    assert checked.returncode == 0, f"mypy --strict on the docs' examples:\n{report}"
