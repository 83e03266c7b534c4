"""The saga's external steps and the webhooks as dramatiq actors, on RabbitMQ, Redis or
(embedded) in process. An actor only turns its message into one call of a use case; the
use cases are idempotent, so a message delivered twice, or redelivered after a worker died
mid-step, does no harm."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware

from adapters.database import (
    READ_POOL,
    ConnectionBudget,
    DatabaseHealth,
    application_env,
    open_pool,
)
from adapters.outbound import OutboundAddresses
from adapters.payments import gateways
from adapters.platform_gateway import HttpPlatformGateways
from adapters.sandbox_payouts import PostgresSandboxPayouts
from adapters.sealed_codes import SealedIssuedCodes
from adapters.settings import Settings
from adapters.tokens import PostgresMemberTokens
from adapters.webhooks import WebhookDelivery
from api.runtime.settlement_ports import settlement_ports
from ledger.cards.application import Cards
from ledger.cards.ports import Payouts
from ledger.clock import utc_now
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.recharges.steps import RechargeSteps
from ledger.settlement.application import Settlements
from ledger.settlement.late_successes import LateSuccesses
from ledger.settlement.steps import SettlementSteps


def make_broker(url: str | None) -> dramatiq.Broker:
    """RabbitMQ for amqp://, Redis for redis://, and an in-process broker when unset."""
    middleware = [m() for m in default_middleware]
    if not url:
        return StubBroker(middleware=middleware)
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, middleware=middleware)
    raise ValueError(f"BROKER_URL must be amqp://… or redis://…, not {url!r}")


class Runtime:
    """What the actors, the dispatcher, the sweeper and the API work with: the applications,
    the process's read pool, and the adapters that reach the platforms and the channels.

    One per process: every pool is sized from `LEDGER_DB_CONNECTIONS` (`budget`, which counts
    the runners' connections when `runners`), and registered with `health`, which checks them
    after an outage."""

    def __init__(self, settings: Settings, database_url: str, *, runners: bool = False) -> None:
        self.settings = settings
        self.database_url = database_url
        self.budget = ConnectionBudget(settings.ledger_db_connections, runners=runners)
        self.health = DatabaseHealth(database_url)
        self.pool = open_pool(
            database_url, self.budget.size(READ_POOL), name="read", health=self.health
        )
        env = application_env(settings, database_url)

        def made(application: Any) -> Any:
            return self.health.register_application(application)

        self.distribution = made(
            Distribution(
                env={**env, **self.budget.env("distribution")},
                issued_codes=SealedIssuedCodes(database_url, settings.secret_bytes),
            )
        )
        self.recharges = made(Recharges(env={**env, **self.budget.env("recharges")}))
        self.payouts: Payouts | None = None
        if settings.sandbox:
            self.payouts = PostgresSandboxPayouts(database_url, settings.ledger_sandbox_payout_exit)
        payments, _ = gateways(settings.sandbox)
        self.cards = made(
            Cards(
                env={**env, **self.budget.env("cards")},
                payments=payments,
                payouts=self.payouts,
                tokens=PostgresMemberTokens(self.pool),
            )
        )
        self.gateways = HttpPlatformGateways(settings)
        self.webhooks = WebhookDelivery(
            settings.secret_bytes, OutboundAddresses(settings.outbound_allow_private)
        )
        # settlements run a few times a day: its share is opened only when used
        self.settlements = made(Settlements(env={**env, **self.budget.env("settlements")}))
        self.settlement_ports = settlement_ports(settings, self.pool, self.distribution)
        self.settlement_steps = SettlementSteps(
            self.settlements,
            self.distribution,
            self.settlement_ports.ledger_side,
            self.settlement_ports.statements,
            self.settlement_ports.payments,
            sandbox=settings.sandbox,
        )
        self.late_successes = LateSuccesses(self.settlements, self.recharges, self.distribution)

    def close(self) -> None:
        self.gateways.close()
        self.webhooks.close()
        self.distribution.close()
        self.recharges.close()
        self.cards.close()
        self.settlement_ports.close()
        self.settlements.close()
        self.health.close()
        self.pool.close()


class Jobs:
    """The actors on `broker`; also the saga's step queue and its notifications."""

    def __init__(self, broker: dramatiq.Broker, runtime: Runtime) -> None:
        self.broker = broker
        self.runtime = runtime
        self.steps = RechargeSteps(
            runtime.recharges, runtime.distribution, runtime.gateways, self, self
        )
        self.recharge_step = dramatiq.Actor(
            self.run_step,
            broker=broker,
            actor_name="recharge_step",
            queue_name="recharges",
            priority=0,
            options={"max_retries": 20, "min_backoff": 500, "max_backoff": 30_000},
        )
        self.webhook = dramatiq.Actor(
            self.deliver_webhook,
            broker=broker,
            actor_name="deliver_webhook",
            queue_name="webhooks",
            priority=10,
            options={"max_retries": 30, "min_backoff": 1_000, "max_backoff": 600_000},
        )

    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: datetime) -> None:
        delay_ms = max(0, int((due_at - utc_now()).total_seconds() * 1000))
        args = (str(recharge_id), step_id)
        self.recharge_step.send_with_options(args=args, delay=delay_ms or None)

    def notify(self, channel_id: UUID, url: str, event: dict[str, Any]) -> None:
        self.webhook.send(str(channel_id), url, event)

    def run_step(self, recharge_id: str, step_id: str) -> None:
        self.steps.run_step(UUID(recharge_id), step_id)

    def deliver_webhook(self, channel_id: str, url: str, event: dict[str, Any]) -> None:
        self.runtime.webhooks.deliver(UUID(channel_id), url, event)


def start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=200)
    worker.start()
    return worker
