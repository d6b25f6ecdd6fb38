"""rich (the `cli` extra) is imported only to draw a table: not by `import eventsource`, not
by `eventsource demo`, not by `--json` output; without it, tables say which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_import_demo_and_json_output_do_not_import_rich(tmp_path: Path) -> None:
    result = _python(
        """
        import sys
        import eventsource
        from eventsource.cli import main
        assert main(["demo", "--url", "memory://"]) == 0
        assert main(["db", "init", "--url", "sqlite:///app.db", "--json"]) == 0
        assert main(["streams", "list", "--url", "sqlite:///app.db", "--json"]) == 0
        assert main(["events", "tail", "--url", "sqlite:///app.db", "--json"]) == 0
        print(sorted(name for name in sys.modules if name.split(".")[0] == "rich"), file=sys.stderr)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"


def test_tables_without_rich_name_the_extra(tmp_path: Path) -> None:
    result = _python(
        """
        import sys
        sys.modules["rich"] = None  # an installation without the cli extra
        from eventsource.cli import main
        assert main(["db", "init", "--url", "sqlite:///app.db", "--json"]) == 0
        assert main(["db", "status", "--url", "sqlite:///app.db"]) == 2
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        "eventsource db status: tables need the cli extra: "
        "pip install 'eventsource-async[cli]' (or pass --json)"
    )
