"""The recharge saga's steps and settlement as use cases, with in-memory fakes of the platform,
the step queue and the webhooks, and the in-memory event store."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import Tracking

from ledger.distribution.application import Distribution
from ledger.distribution.catalogue import Product
from ledger.money import Money
from ledger.recharges.application import Recharges
from ledger.recharges.callbacks import Callback
from ledger.recharges.decisions import StepResult
from ledger.recharges.saga import Recharge
from ledger.recharges.steps import WEBHOOK_NAMESPACE, RechargeSteps

GATEWAY_URL = "https://gateway.iqiyi.example"
ACCOUNT = "13800138000"
CREDITED = StepResult(
    "succeeded",
    platform_order_id="PO0000000001",
    starts_at=datetime(2026, 12, 2, tzinfo=UTC),
    ends_at=datetime(2027, 1, 1, tzinfo=UTC),
)


class FakePlatform:
    """Every platform: answers each call with `answer` and remembers what it was asked."""

    def __init__(self) -> None:
        self.answer = CREDITED
        self.calls: list[tuple[Any, ...]] = []
        self.urls: list[str] = []

    def gateway_for(self, base_url: str) -> FakePlatform:
        self.urls.append(base_url)
        return self

    def recharge(
        self, order_no: str, account: str, product_code: str, duration_days: int
    ) -> StepResult:
        self.calls.append(("recharge", order_no, account, product_code, duration_days))
        return self.answer

    def order_status(self, order_no: str) -> StepResult:
        self.calls.append(("order_status", order_no))
        return self.answer


class FakeQueue:
    def __init__(self) -> None:
        self.enqueued: list[tuple[UUID, str, datetime]] = []

    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: datetime) -> None:
        self.enqueued.append((recharge_id, step_id, due_at))


class FakeWebhooks:
    def __init__(self) -> None:
        self.sent: list[tuple[UUID, str, dict[str, Any]]] = []

    def notify(self, channel_id: UUID, url: str, event: dict[str, Any]) -> None:
        self.sent.append((channel_id, url, event))


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Desk:
    """A shop with codes, the saga starter following the distribution log, and the steps."""

    def __init__(
        self,
        webhook: str | None = None,
        distribution: Distribution | None = None,
        recharges: Recharges | None = None,
    ) -> None:
        """In memory, unless the applications are given (on PostgreSQL, for instance)."""
        self.distribution = distribution or Distribution(env={"CODE_HASH_KEY": "k"})
        self.recharges = recharges or Recharges()
        platform, self.product, self.shop = uuid4(), uuid4(), uuid4()
        self.platform_id = platform
        self.distribution.register_platform(platform, "iQiyi", GATEWAY_URL)
        self.distribution.register_product(
            self.product, platform, "VIP monthly", 30, Money(3000), Money(2000)
        )
        self.distribution.register_channel(self.shop, "Pudong shop")
        if webhook:
            self.distribution.set_webhook(self.shop, webhook)
        self.distribution.deposit(uuid4(), self.shop, Money(100_000))
        self.distribution.purchase_stock(uuid4(), self.shop, self.product, 2)
        _, self.codes = self.distribution.issue_codes(uuid4(), self.shop, self.product, 2)
        self.followed = 0
        self.platform, self.queue, self.webhooks = FakePlatform(), FakeQueue(), FakeWebhooks()
        self.clock = Clock()
        self.steps = RechargeSteps(
            self.recharges,
            self.distribution,
            self.platform,
            self.queue,
            self.webhooks,
            clock=self.clock,
        )

    def reserve(self, code: int = 0) -> UUID:
        """An end user places a recharge; the saga starts from the reservation, and the
        clock stands at the time of its first step."""
        recharge_id = uuid4()
        code_id = self.distribution.find_code(self.codes[code]).id
        self.distribution.reserve_code(code_id, recharge_id, ACCOUNT, self.shop, self.clock())
        self.follow_distribution()
        self.clock.now = self.step_of(recharge_id).due_at
        return recharge_id

    def follow_distribution(self) -> None:
        recorder = self.distribution.recorder
        for notification in recorder.select_notifications(self.followed + 1, limit=1000):
            event = self.distribution.mapper.to_domain_event(notification)
            tracking = Tracking(self.distribution.name, notification.id)
            self.recharges.process_event(event, tracking)
            self.followed = notification.id

    def recharge(self, recharge_id: UUID) -> Recharge:
        return self.recharges.recharge(recharge_id)

    def step_of(self, recharge_id: UUID) -> Any:
        step = self.recharge(recharge_id).step
        assert step is not None
        return step

    def code_of(self, recharge_id: UUID) -> Any:
        return self.distribution.code(self.recharge(recharge_id).code_id)


def test_a_due_recharge_step_asks_the_platform_to_credit_with_the_recharge_id_as_order_number():
    desk = Desk()
    recharge_id = desk.reserve()

    desk.steps.run_step(recharge_id, "1-recharge")

    assert desk.platform.urls == [GATEWAY_URL]
    assert desk.platform.calls == [("recharge", str(recharge_id), ACCOUNT, str(desk.product), 30)]
    recharge = desk.recharge(recharge_id)
    assert recharge.status == "succeeded"
    assert recharge.membership == {
        "platform_order_id": "PO0000000001",
        "starts_at": CREDITED.starts_at,
        "ends_at": CREDITED.ends_at,
    }


def test_an_answer_that_cannot_be_trusted_is_followed_by_a_query_of_the_order():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.platform.answer = StepResult("unknown", reason="timeout")
    desk.steps.run_step(recharge_id, "1-recharge")
    query = desk.step_of(recharge_id)
    assert query.kind == "query"

    desk.clock.now = query.due_at
    desk.platform.answer = CREDITED
    desk.steps.run_step(recharge_id, query.id)

    assert desk.platform.calls[1:] == [("order_status", str(recharge_id))]
    assert desk.recharge(recharge_id).status == "succeeded"
    assert desk.recharge(recharge_id).recharges_sent == 1


def test_a_step_that_is_no_longer_current_does_nothing():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.platform.answer = StepResult("unknown", reason="timeout")
    desk.steps.run_step(recharge_id, "1-recharge")
    version = desk.recharge(recharge_id).version

    desk.steps.run_step(recharge_id, "1-recharge")  # delivered again

    assert len(desk.platform.calls) == 1
    assert desk.recharge(recharge_id).version == version
    assert desk.queue.enqueued == []


def test_a_step_of_a_finished_saga_does_nothing():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.steps.run_step(recharge_id, "1-recharge")

    desk.steps.run_step(recharge_id, "1-recharge")

    assert len(desk.platform.calls) == 1


def test_a_step_not_yet_due_is_put_back_on_the_queue_for_its_time_and_not_run():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.platform.answer = StepResult("unknown", reason="http 503")
    desk.steps.run_step(recharge_id, "1-recharge")
    query = desk.step_of(recharge_id)

    desk.clock.now = query.due_at - timedelta(milliseconds=1)  # the broker woke it early
    desk.steps.run_step(recharge_id, query.id)

    assert desk.queue.enqueued == [(recharge_id, query.id, query.due_at)]
    assert len(desk.platform.calls) == 1
    assert desk.step_of(recharge_id) == query


def test_a_succeeded_recharge_redeems_its_code_and_tells_the_channels_webhook():
    desk = Desk(webhook="https://shop.example/hooks?tenant=7")
    recharge_id = desk.reserve()
    desk.steps.run_step(recharge_id, "1-recharge")

    event = desk.steps.settle(recharge_id)

    code = desk.code_of(recharge_id)
    assert (code.status, code.recharge_id) == ("redeemed", recharge_id)
    assert desk.webhooks.sent == [(desk.shop, "https://shop.example/hooks?tenant=7", event)]
    succeeded = final_event(desk, recharge_id)
    assert isinstance(succeeded, Recharge.Succeeded)
    event_id = uuid.uuid5(WEBHOOK_NAMESPACE, f"{recharge_id}:{succeeded.originator_version}")
    assert event == {
        "event_id": str(event_id),
        "type": "recharge.succeeded",
        "occurred_at": succeeded.timestamp.isoformat(),
        "data": {
            "id": str(recharge_id),
            "status": "succeeded",
            "product_id": str(desk.product),
            "account": ACCOUNT,
            "channel_id": str(desk.shop),
            "failure": None,
        },
    }


def test_a_failed_recharge_releases_its_code_for_another_try():
    desk = Desk(webhook="https://shop.example/hooks")
    recharge_id = desk.reserve()
    desk.platform.answer = StepResult("failed", reason="account_not_eligible")
    desk.steps.run_step(recharge_id, "1-recharge")

    event = desk.steps.settle(recharge_id)

    code = desk.code_of(recharge_id)
    assert (code.status, code.recharge_id) == ("issued", None)
    assert event is not None
    assert event["type"] == "recharge.failed"
    assert event["data"]["status"] == "failed"
    assert event["data"]["failure"] == "account_not_eligible"
    assert isinstance(final_event(desk, recharge_id), Recharge.Failed)


def test_a_channel_without_a_webhook_hears_nothing():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.steps.run_step(recharge_id, "1-recharge")

    assert desk.steps.settle(recharge_id) is None

    assert desk.code_of(recharge_id).status == "redeemed"
    assert desk.webhooks.sent == []


def test_settling_twice_changes_nothing_the_second_time():
    desk = Desk(webhook="https://shop.example/hooks")
    recharge_id = desk.reserve()
    desk.steps.run_step(recharge_id, "1-recharge")
    first = desk.steps.settle(recharge_id)
    version = desk.code_of(recharge_id).version

    again = desk.steps.settle(recharge_id)

    assert desk.code_of(recharge_id).version == version
    assert again == first, "the same event, under the same id, for the channel to drop"


def test_a_failed_recharge_settled_twice_releases_its_code_once():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.platform.answer = StepResult("failed", reason="account_not_eligible")
    desk.steps.run_step(recharge_id, "1-recharge")
    desk.steps.settle(recharge_id)
    version = desk.code_of(recharge_id).version

    desk.steps.settle(recharge_id)

    assert desk.code_of(recharge_id).version == version


def test_overdue_steps_are_sent_again_now():
    desk = Desk()
    recharge_id = desk.reserve()
    desk.clock.now += timedelta(minutes=1)

    desk.steps.resend_overdue([(recharge_id, "1-recharge")])

    assert desk.queue.enqueued == [(recharge_id, "1-recharge", desk.clock.now)]


def test_a_saga_goes_to_review_once_past_its_deadline():
    desk = Desk()
    recharge_id = desk.reserve()
    deadline = desk.recharge(recharge_id).deadline

    desk.clock.now = deadline - timedelta(seconds=1)
    desk.steps.check_deadlines([recharge_id])
    assert desk.recharge(recharge_id).status == "pending"

    desk.clock.now = deadline
    desk.steps.check_deadlines([recharge_id])
    assert desk.recharge(recharge_id).status == "review"


def final_event(desk: Desk, recharge_id: UUID) -> Any:
    return list(desk.recharges.repository.event_store.get(recharge_id))[-1]


def reads_of(*applications: Any) -> Counter[UUID]:
    """Counts each aggregate's reads from the event stores of `applications` from now on."""
    reads: Counter[UUID] = Counter()
    for application in applications:
        store = application.repository.event_store
        get = store.get

        def counted(*args: Any, _get: Any = get, **kwargs: Any) -> Any:
            reads[kwargs["originator_id"] if "originator_id" in kwargs else args[0]] += 1
            return _get(*args, **kwargs)

        store.get = counted
    return reads


def test_a_step_reads_its_recharge_once_and_the_product_once_a_process():
    """The result is recorded on the recharge the step read before its call (a conflict
    would read it again); a product never changes, its platform's gateway may move."""
    desk = Desk()
    first, second = desk.reserve(0), desk.reserve(1)
    reads = reads_of(desk.recharges, desk.distribution)

    desk.steps.run_step(first, "1-recharge")
    desk.steps.run_step(second, "1-recharge")

    assert (reads[first], reads[second]) == (1, 1)
    assert reads[desk.product] == 1
    assert reads[desk.platform_id] == 2
    assert desk.recharge(first).status == desk.recharge(second).status == "succeeded"


def test_a_result_for_a_recharge_changed_during_the_call_is_decided_on_fresh_state():
    """The platform's callback settled the recharge while the step waited for the answer: the
    step's result, decided on what the step read, conflicts and is decided again: ignored."""
    desk = Desk()
    recharge_id = desk.reserve()
    called_back = Callback(
        "success", CREDITED.platform_order_id, CREDITED.starts_at, CREDITED.ends_at
    )
    answer = desk.platform.recharge

    def answer_after_the_callback(*asked: Any) -> StepResult:
        desk.recharges.record_platform_news(recharge_id, called_back, desk.clock())
        return answer(*asked)

    setattr(desk.platform, "recharge", answer_after_the_callback)  # noqa: B010
    desk.steps.run_step(recharge_id, "1-recharge")

    events = list(desk.recharges.repository.event_store.get(recharge_id))
    assert [type(e) for e in events].count(Recharge.Succeeded) == 1
    assert desk.recharge(recharge_id).status == "succeeded"


def test_a_product_records_nothing_after_its_registration():
    """What lets a step keep a product as first read (RechargeSteps._product): a product
    event other than its registration would have to be read fresh, like the platform's."""
    recorded = {
        name
        for name, kind in vars(Product).items()
        if isinstance(kind, type) and issubclass(kind, Product.Event)
    }
    assert recorded - {"Event", "Created"} == {"Registered"}
