"""The outbox dispatcher settles a recharge it followed from its first event without reading
it again (it folds the events it handles); one it did not follow whole, it reads. Either way
the code is settled once and the channel hears the same event."""

from __future__ import annotations

from typing import Any
from uuid import UUID

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
