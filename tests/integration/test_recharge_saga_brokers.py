"""The whole recharge saga against the real PostgreSQL, the real brokers on the machine (RabbitMQ
and Redis) and the sandbox video platform as a process of its own:

reservation (Distribution) → saga starter (Recharges follows the distribution log) → outbox
dispatcher (follows the recharges log, enqueues the step) → dramatiq worker (through the
broker) → `ledger sandbox-platform` over HTTP → result recorded → dispatcher settles the code.

Everything but the platform runs in this process through `start_background(..., with_worker=
True)`, the composition `ledger serve` and `ledger projections run` use. Queues are isolated per
run (tests/recharge_support.py): a Redis database of the run's own, RabbitMQ's actor queues
purged before and after under a lock file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from adapters.settings import Settings
from api.runtime.background import Background, start_background
from ledger.errors import NotFound
from ledger.money import Money
from tests.recharge_support import (
    Platform,
    rabbitmq_isolated,
    rabbitmq_messages,
    redis_isolated,
    redis_keys,
    start_platform,
)

pytestmark = pytest.mark.integration

SECRET = "integration-saga-platform-secret"
PARTNER = "integration-saga-partner"
WAIT_SECONDS = 30

T = TypeVar("T")


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    started = start_platform(
        {"LEDGER_PLATFORM_SECRET": SECRET, "LEDGER_PLATFORM_PARTNER_ID": PARTNER}
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    isolated = rabbitmq_isolated() if request.param == "rabbitmq" else redis_isolated()
    with isolated as url:
        yield url


def settings_for(database_url: str, broker_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        ledger_sandbox=False,
        ledger_outbound_allow_private=True,  # the sandbox platform is on 127.0.0.1
        ledger_secret_key="integration-secret",
        ledger_code_hash_key="integration-code-key",
        ledger_platform_secret=SECRET,
        ledger_platform_partner_id=PARTNER,
        ledger_worker_threads=2,
        ledger_gateway_timeout_seconds=3.0,
        ledger_recharge_deadline_seconds=120,
    )


def eventually(probe: Callable[[], T | None], what: str, seconds: float = WAIT_SECONDS) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def final_status(background: Background, recharge_id: uuid.UUID) -> str | None:
    try:
        recharge = background.runtime.recharges.recharge(recharge_id)
    except NotFound:
        return None  # the saga starter has not seen the reservation yet
    return recharge.status if recharge.status != "pending" else None


def code_status(background: Background, code_id: uuid.UUID, wanted: str) -> str | None:
    status = background.runtime.distribution.code(code_id).status
    return status if status == wanted else None


def test_the_saga_redeems_a_code_through_the_real_broker_and_releases_a_failed_one(
    database_url: str, broker_url: str, platform: Platform
) -> None:
    good, refused, again = (f"139{uuid.uuid4().int % 10**8:08d}" for _ in range(3))
    platform.faults(fail_accounts=[refused])
    settings = settings_for(database_url, broker_url)
    background = start_background(settings, database_url, with_worker=True)
    try:
        kind = type(background.broker).__name__
        assert kind == ("RabbitmqBroker" if broker_url.startswith("amqp") else "RedisBroker")
        app = background.runtime.distribution
        platform_id, product_id, channel_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        app.register_platform(platform_id, "iQiyi (sandbox)", platform.url)
        app.register_product(product_id, platform_id, "Gold VIP", 30, Money(3000), Money(2000))
        app.register_channel(channel_id, "Shop")
        app.deposit(uuid.uuid4(), channel_id, Money(100_000))
        app.purchase_stock(uuid.uuid4(), channel_id, product_id, 2)
        _, clear = app.issue_codes(uuid.uuid4(), channel_id, product_id, 2)
        first, second = (app.find_code(c).id for c in clear)

        started = time.monotonic()
        ok_id, failed_id = uuid.uuid4(), uuid.uuid4()
        app.reserve_code(first, ok_id, good, channel_id, datetime.now(UTC))
        app.reserve_code(second, failed_id, refused, channel_id, datetime.now(UTC))

        assert eventually(lambda: final_status(background, ok_id), "success") == "succeeded"
        assert eventually(lambda: final_status(background, failed_id), "failure") == "failed"
        eventually(lambda: code_status(background, first, "redeemed"), "the code redeemed")
        eventually(lambda: code_status(background, second, "issued"), "the code released")
        took = time.monotonic() - started

        # the platform credited the good account once, the refused one never
        assert [c["order_no"] for c in platform.credits(good)] == [str(ok_id)]
        assert platform.credits(refused) == []
        recharge = background.runtime.recharges.recharge(ok_id)
        assert recharge.membership and recharge.membership["platform_order_id"]
        assert "account_not_eligible" in (
            background.runtime.recharges.recharge(failed_id).failure or ""
        )

        # the released code is redeemable again, by another account
        retry_id = uuid.uuid4()
        app.reserve_code(second, retry_id, again, channel_id, datetime.now(UTC))
        assert eventually(lambda: final_status(background, retry_id), "the retry") == "succeeded"
        eventually(lambda: code_status(background, second, "redeemed"), "the retry redeemed")
        assert [c["order_no"] for c in platform.credits(again)] == [str(retry_id)]

        # the messages went through the broker named by the URL
        if kind == "RedisBroker":
            assert any(k.startswith("dramatiq:") for k in redis_keys(broker_url))
        else:
            assert "recharges" in rabbitmq_messages(broker_url)
        assert took < WAIT_SECONDS
    finally:
        background.stop()

    # nothing is left waiting in the broker
    if broker_url.startswith("amqp"):
        left = rabbitmq_messages(broker_url)
        assert left.get("recharges", 0) == 0 and left.get("recharges.DQ", 0) == 0, left
    else:
        import redis

        client = redis.Redis.from_url(broker_url)
        try:
            assert client.llen("dramatiq:recharges") == 0
            assert client.hlen("dramatiq:recharges.msgs") == 0
        finally:
            client.close()
