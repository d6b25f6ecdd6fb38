import logging
from uuid import uuid4

import pytest
from pydantic import BaseModel

from eventsource import (
    NIL_AGGREGATE_ID,
    AggregateRoot,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    InvalidEventError,
    UnhandledEventError,
    handles,
)

registry = EventRegistry()


class Opened(DomainEvent, registry=registry):
    owner: str


class Deposited(DomainEvent, registry=registry):
    amount: int


class BonusDeposited(Deposited, registry=registry):
    pass


class Noted(DomainEvent, registry=registry):
    text: str


class Wallet(BaseModel):
    owner: str = ""
    balance: int = 0


class WalletAggregate(DeclarativeAggregate[Wallet]):
    def open(self, owner: str) -> None:
        self.apply_event(Opened(owner=owner))

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.apply_event(Deposited(amount=amount))

    @handles(Opened)
    def _opened(self, event: Opened) -> None:
        self.state.owner = event.owner

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount


def test_aggregate_type_defaults_to_class_name() -> None:
    assert WalletAggregate.aggregate_type == "WalletAggregate"

    class Named(WalletAggregate):
        aggregate_type = "Purse"

    assert Named.aggregate_type == "Purse"


def test_new_events_are_stamped_applied_and_queued() -> None:
    wallet = WalletAggregate(uuid4())
    assert wallet.version == 0
    assert wallet.state == Wallet()
    wallet.open("ann")
    wallet.deposit(5)
    assert wallet.state == Wallet(owner="ann", balance=5)
    assert wallet.version == 2
    assert wallet.committed_version == 0
    events = wallet.uncommitted_events
    assert [e.aggregate_version for e in events] == [1, 2]
    assert {e.aggregate_id for e in events} == {wallet.aggregate_id}
    assert {e.aggregate_type for e in events} == {"WalletAggregate"}
    wallet.mark_events_as_committed()
    assert not wallet.has_uncommitted_events
    assert wallet.committed_version == 2


def test_replay_rebuilds_state_and_checks_versions() -> None:
    source = WalletAggregate(uuid4())
    source.open("bob")
    source.deposit(3)
    source.deposit(4)
    replica = WalletAggregate(source.aggregate_id)
    replica.load_from_history(source.uncommitted_events)
    assert replica.state == source.state
    assert replica.version == 3
    assert not replica.has_uncommitted_events
    with pytest.raises(InvalidEventError, match="version 3"):
        replica.load_from_history([source.uncommitted_events[0]])


def test_handler_of_a_base_event_handles_subclasses() -> None:
    wallet = WalletAggregate(uuid4())
    wallet.apply_event(BonusDeposited(amount=7))
    assert wallet.state.balance == 7


def test_unhandled_event_policies(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(UnhandledEventError, match="Noted"):
        WalletAggregate(uuid4()).apply_event(Noted(text="x"))

    class Lenient(WalletAggregate):
        unhandled_events = "ignore"

    class Chatty(WalletAggregate):
        unhandled_events = "warn"

    lenient = Lenient(uuid4())
    lenient.apply_event(Noted(text="x"))
    assert lenient.version == 1
    with caplog.at_level(logging.WARNING):
        Chatty(uuid4()).apply_event(Noted(text="x"))
    assert "no handler for Noted" in caplog.text

    with pytest.raises(TypeError, match="unhandled_events"):

        class Wrong(WalletAggregate):
            unhandled_events = "explode"  # type: ignore[assignment]


def test_two_handlers_for_one_event_is_a_class_error() -> None:
    with pytest.raises(TypeError, match="both"):

        class Confused(DeclarativeAggregate[Wallet]):
            @handles(Opened)
            def _a(self, event: Opened) -> None: ...

            @handles(Opened)
            def _b(self, event: Opened) -> None: ...


def test_subclass_handler_overrides_base_handler() -> None:
    class DoubleWallet(WalletAggregate):
        @handles(Deposited)
        def _double(self, event: Deposited) -> None:
            self.state.balance += 2 * event.amount

    wallet = DoubleWallet(uuid4())
    wallet.deposit(5)
    assert wallet.state.balance == 10


def test_handlers_resolve_per_class_after_the_parent_dispatched() -> None:
    """Each class resolves its own handlers (the dispatch cache of a class that already
    replayed events is not its subclasses'): an override of the handler method by name, and
    handlers that are not plain functions, run as getattr would find them."""
    parent = WalletAggregate(uuid4())
    parent.deposit(5)
    parent.apply_event(BonusDeposited(amount=1))

    class Overridden(WalletAggregate):
        def _deposited(self, event: Deposited) -> None:  # same name, no @handles
            self.state.balance += 100 * event.amount

    seen: list[str] = []

    class Static(DeclarativeAggregate[Wallet]):
        @handles(Noted)
        @staticmethod
        def _noted(event: Noted) -> None:
            seen.append(event.text)

    child = Overridden(uuid4())
    child.deposit(5)
    child.apply_event(BonusDeposited(amount=1))
    assert (parent.state.balance, child.state.balance) == (6, 600)
    static = Static(uuid4())
    static.apply_event(Noted(text="a"))
    static.apply_event(Noted(text="b"))
    assert seen == ["a", "b"]


def test_state_needs_defaults_or_an_override() -> None:
    class Strict(BaseModel):
        owner: str

    class NeedsState(DeclarativeAggregate[Strict]):
        pass

    with pytest.raises(TypeError, match="_get_initial_state"):
        NeedsState(uuid4())

    class GivesState(DeclarativeAggregate[Strict]):
        def _get_initial_state(self) -> Strict:
            return Strict(owner="nobody")

    assert GivesState(uuid4()).state.owner == "nobody"


def test_plain_aggregate_root() -> None:
    class Counter(AggregateRoot[Wallet]):
        def _apply(self, event: DomainEvent) -> None:
            if isinstance(event, Deposited):
                self.state.balance += event.amount

    counter = Counter(uuid4())
    counter.apply_event(Deposited(amount=2))
    assert counter.state.balance == 2
    assert repr(counter).endswith("v1>")


def test_nil_aggregate_id_is_refused() -> None:
    with pytest.raises(InvalidEventError):
        WalletAggregate(NIL_AGGREGATE_ID)
