"""`eventsource.sagas` imports no driver; its backends load theirs on first use."""

from __future__ import annotations

from tests.test_packaging import DRIVERS, run_python


def test_import_sagas_imports_no_driver() -> None:
    result = run_python(
        f"""
        import sys
        import eventsource.sagas
        from eventsource.sagas import WorkflowEngine, InMemoryTimerStore
        from eventsource.testing import SagaScenario
        print(",".join(sorted(n for n in sys.modules if n.split(".")[0] in {DRIVERS!r})))
        from eventsource.sagas import SQLiteTimerStore, PostgreSQLTimerStore
        print(SQLiteTimerStore.__name__, PostgreSQLTimerStore.__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["", "SQLiteTimerStore PostgreSQLTimerStore"]
