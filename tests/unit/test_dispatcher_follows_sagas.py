"""The outbox dispatcher settles a recharge it followed from its first event without reading
it again (it folds the events it handles); one it did not follow whole, it reads. Either way
the code is settled once and the channel hears the same event."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking

from api.runtime.dispatcher import Dispatcher, SagasInFlight
from ledger.recharges.saga import Recharge
from ledger.recharges.steps import final_state_event
from tests.unit.test_recharge_steps import Desk, reads_of

WEBHOOK = "https://shop.example/hooks"


def dispatcher_of(desk: Desk, sagas: SagasInFlight | None = None) -> Dispatcher:
    bound = type("Bound", (Dispatcher,), {"steps": desk.steps, "queue": desk.queue})
    dispatcher: Dispatcher = bound(None)
    if sagas is not None:
        dispatcher.sagas = sagas
    return dispatcher


def succeeded_saga(desk: Desk, code: int = 0) -> tuple[UUID, list[Any]]:
    recharge_id = desk.reserve(code)
    desk.steps.run_step(recharge_id, "1-recharge")
    return recharge_id, list(desk.recharges.repository.event_store.get(recharge_id))


def test_a_saga_followed_from_its_start_is_settled_without_reading_it():
    desk = Desk(webhook=WEBHOOK)
    recharge_id, events = succeeded_saga(desk)
    dispatcher = dispatcher_of(desk)
    reads = reads_of(desk.recharges)

    for event in events:
        dispatcher.dispatch(event)

    assert reads[recharge_id] == 0
    assert isinstance(events[-1], Recharge.Succeeded)
    assert desk.code_of(recharge_id).status == "redeemed"
    final = final_state_event(desk.recharge(recharge_id))
    assert desk.webhooks.sent == [(desk.shop, WEBHOOK, final)]
    assert dispatcher.sagas.followed == {}, "a settled saga is let go"


def test_a_saga_joined_midway_is_read_to_be_settled():
    desk = Desk(webhook=WEBHOOK)
    recharge_id, events = succeeded_saga(desk)
    dispatcher = dispatcher_of(desk)
    reads = reads_of(desk.recharges)

    for event in events[1:]:  # the dispatcher started after the saga did
        dispatcher.dispatch(event)

    assert reads[recharge_id] == 1
    assert desk.code_of(recharge_id).status == "redeemed"
    assert desk.webhooks.sent == [
        (desk.shop, WEBHOOK, final_state_event(desk.recharge(recharge_id)))
    ]


def test_events_handled_again_after_a_failure_settle_once_with_the_same_event():
    """A run failed part-way is handled again from its first untracked event: the saga's
    earlier events come again, and the final one again if its settlement failed."""
    desk = Desk(webhook=WEBHOOK)
    recharge_id, events = succeeded_saga(desk)
    dispatcher = dispatcher_of(desk)
    reads = reads_of(desk.recharges)
    for event in events[:-1]:
        dispatcher.dispatch(event)

    for event in events[1:]:  # again, from the second event
        dispatcher.dispatch(event)
    assert reads[recharge_id] == 0
    code = desk.distribution.code(events[0].code_id)
    dispatcher.dispatch(events[-1])  # the final event again: its saga was let go, so read

    assert reads[recharge_id] == 1
    assert desk.distribution.code(code.id).version == code.version
    first, again = desk.webhooks.sent
    assert first == again


def test_at_most_so_many_sagas_are_followed_the_oldest_let_go_first():
    desk = Desk(webhook=WEBHOOK)
    older, older_events = succeeded_saga(desk, 0)
    newer, newer_events = succeeded_saga(desk, 1)
    dispatcher = dispatcher_of(desk, SagasInFlight(limit=1))
    reads = reads_of(desk.recharges)

    for event in [*older_events[:-1], *newer_events[:-1]]:
        dispatcher.dispatch(event)
    assert list(dispatcher.sagas.followed) == [newer]
    dispatcher.dispatch(older_events[-1])
    dispatcher.dispatch(newer_events[-1])

    assert (reads[older], reads[newer]) == (1, 0)
    assert desk.code_of(older).status == desk.code_of(newer).status == "redeemed"


class Tracked:
    """The dispatcher's tracking recorder: what it was last told."""

    def __init__(self) -> None:
        self.last: Any = None

    def insert_tracking(self, tracking: Any) -> None:
        self.last = tracking


def tracked_dispatcher(desk: Desk) -> tuple[Dispatcher, Tracked]:
    bound = type("Bound", (Dispatcher,), {"steps": desk.steps, "queue": desk.queue})
    tracked = Tracked()
    return bound(tracked), tracked


def two_final_states_last(desk: Desk) -> list[tuple[Any, Any]]:
    """Two succeeded sagas as a run of the log: every other event first, then both final
    states one after the other (so both settle at once)."""
    sagas = [succeeded_saga(desk, code)[1] for code in (0, 1)]
    ordered = [e for events in sagas for e in events[:-1]] + [events[-1] for events in sagas]
    return [(e, Tracking("recharges", n)) for n, e in enumerate(ordered, start=1)]


def test_a_run_settles_its_final_states_together_and_is_tracked_once_at_its_end():
    desk = Desk(webhook=WEBHOOK)
    run = two_final_states_last(desk)
    dispatcher, tracked = tracked_dispatcher(desk)

    dispatcher.process_run(run)

    recharges = {e.originator_id for e, _ in run}
    assert all(desk.code_of(r).status == "redeemed" for r in recharges)
    sent = sorted(event["event_id"] for _, _, event in desk.webhooks.sent)
    assert sent == sorted(final_state_event(desk.recharge(r))["event_id"] for r in recharges)
    assert tracked.last == run[-1][1]


def test_a_settlement_that_fails_tracks_the_run_up_to_the_event_before_it(monkeypatch: Any):
    desk = Desk(webhook=WEBHOOK)
    run = two_final_states_last(desk)
    first_final = run[-2][0]
    dispatcher, tracked = tracked_dispatcher(desk)
    settle = desk.steps.settle

    def failing(recharge_id: UUID, final: Any = None) -> Any:
        if recharge_id == first_final.originator_id:
            raise RuntimeError("the database went away")
        return settle(recharge_id, final)

    monkeypatch.setattr(desk.steps, "settle", failing)
    with pytest.raises(RuntimeError, match="went away"):
        dispatcher.process_run(run)

    assert tracked.last == run[-3][1]
    assert desk.code_of(first_final.originator_id).status != "redeemed"
    monkeypatch.setattr(desk.steps, "settle", settle)
    dispatcher.process_run(run[-2:])  # after the restart: from the first not tracked
    assert desk.code_of(first_final.originator_id).status == "redeemed"
    assert tracked.last == run[-1][1]


class GatedQueue:
    """A broker whose first recharge's message is confirmed only once another recharge's
    message arrived (or after `patience` seconds, noted): shows whether the dispatcher sent
    the second while the first was still in hand."""

    def __init__(self, first: UUID, patience: float = 5.0) -> None:
        self.first, self.patience = first, patience
        self.other_arrived = threading.Event()
        self.waited_in_vain = False
        self.log: list[tuple[str, UUID]] = []
        self.fail_first = False

    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: Any) -> None:
        if recharge_id == self.first:
            if self.fail_first:
                raise RuntimeError("the broker refused")
            self.waited_in_vain = not self.other_arrived.wait(self.patience)
        else:
            self.other_arrived.set()
        self.log.append(("sent", recharge_id))


def two_sagas_one_after_the_other(desk: Desk) -> tuple[list[UUID], list[tuple[Any, Any]]]:
    """Two succeeded sagas as a run of the log, every event of the first before the second's."""
    sagas = [succeeded_saga(desk, code) for code in (0, 1)]
    events = [e for _, saga in sagas for e in saga]
    run = [(e, Tracking("recharges", n)) for n, e in enumerate(events, start=1)]
    return [recharge_id for recharge_id, _ in sagas], run


def gated_dispatcher(desk: Desk, queue: GatedQueue) -> tuple[Dispatcher, Tracked]:
    bound = type("Bound", (Dispatcher,), {"steps": desk.steps, "queue": queue})
    tracked = Tracked()
    dispatcher: Dispatcher = bound(tracked)
    settle = desk.steps.settle

    def settle_logged(recharge_id: UUID, final: Any = None) -> Any:
        queue.log.append(("settled", recharge_id))
        return settle(recharge_id, final)

    dispatcher.steps = type(desk.steps)(
        desk.recharges, desk.distribution, desk.platform, desk.queue, desk.webhooks,
        clock=desk.clock,
    )  # fmt: skip
    dispatcher.steps.settle = settle_logged  # type: ignore[method-assign]
    return dispatcher, tracked


def test_a_recharge_waiting_on_the_broker_holds_back_only_its_own_events():
    desk = Desk(webhook=WEBHOOK)
    (first, second), run = two_sagas_one_after_the_other(desk)
    queue = GatedQueue(first)
    dispatcher, tracked = gated_dispatcher(desk, queue)

    dispatcher.process_run(run)

    assert not queue.waited_in_vain, "the second recharge's step waited behind the first's"
    assert queue.log.index(("sent", second)) < queue.log.index(("sent", first))
    for recharge_id in (first, second):  # each recharge's events in the log's order
        assert queue.log.index(("sent", recharge_id)) < queue.log.index(("settled", recharge_id))
        assert desk.code_of(recharge_id).status == "redeemed"
    assert tracked.last == run[-1][1]


def test_a_step_the_broker_refused_stops_its_recharge_and_the_tracking_before_it():
    desk = Desk(webhook=WEBHOOK)
    (first, second), run = two_sagas_one_after_the_other(desk)
    queue = GatedQueue(first)
    queue.fail_first = True
    dispatcher, tracked = gated_dispatcher(desk, queue)
    scheduled = next(n for n, (e, _) in enumerate(run) if isinstance(e, Recharge.StepScheduled))

    with pytest.raises(RuntimeError, match="the broker refused"):
        dispatcher.process_run(run)

    assert tracked.last == run[scheduled - 1][1]
    assert ("settled", first) not in queue.log, "its final state waited for its step"
    assert desk.code_of(first).status != "redeemed"
    queue.fail_first = False
    dispatcher.process_run(run[scheduled:])  # after the restart: from the first not tracked
    assert desk.code_of(first).status == desk.code_of(second).status == "redeemed"
    assert tracked.last == run[-1][1]
