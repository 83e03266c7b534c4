"""The saga's external steps as dramatiq actors, on RabbitMQ, Redis or (embedded) in process.

Actors are idempotent by step id: a step that is no longer the saga's current step is
skipped, and the platform credits at most once per order number (the recharge id), so a
message delivered twice, or redelivered after a worker died mid-step, does no harm.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import dramatiq
import httpx
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware

from adapters.database import application_env
from adapters.platform_gateway import GatewayResult, HttpPlatformGateway
from adapters.settings import Settings
from adapters.signing import webhook_secret
from adapters.webhooks import deliver
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.recharges.decisions import StepResult

log = logging.getLogger(__name__)


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
    """What the actors and the dispatcher work with: the applications and the gateways."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        env = application_env(
            settings, database_url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="7"
        )
        self.settings = settings
        self.distribution = Distribution(env=env)
        self.recharges = Recharges(env=env)
        self._gateways: dict[str, HttpPlatformGateway] = {}

    def gateway(self, base_url: str) -> HttpPlatformGateway:
        if base_url not in self._gateways:
            self._gateways[base_url] = HttpPlatformGateway.from_settings(
                base_url, self.settings, timeout=self.settings.ledger_gateway_timeout_seconds
            )
        return self._gateways[base_url]

    def close(self) -> None:
        for gateway in self._gateways.values():
            gateway.close()
        self.distribution.close()
        self.recharges.close()


class Jobs:
    def __init__(self, broker: dramatiq.Broker, runtime: Runtime) -> None:
        self.broker = broker
        self.runtime = runtime
        self.http = httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0), follow_redirects=False)
        self.recharge_step = dramatiq.Actor(
            self.run_step, broker=broker, actor_name="recharge_step", queue_name="recharges",
            priority=0, options={"max_retries": 20, "min_backoff": 500, "max_backoff": 30_000},
        )
        self.webhook = dramatiq.Actor(
            self.deliver_webhook, broker=broker, actor_name="deliver_webhook",
            queue_name="webhooks", priority=10,
            options={"max_retries": 30, "min_backoff": 1_000, "max_backoff": 600_000},
        )

    def enqueue_step(self, recharge_id: UUID, step_id: str, due_at: datetime) -> None:
        delay_ms = max(0, int((due_at - datetime.now(UTC)).total_seconds() * 1000))
        args = (str(recharge_id), step_id)
        self.recharge_step.send_with_options(args=args, delay=delay_ms or None)

    def enqueue_webhook(self, channel_id: UUID, url: str, event: dict[str, Any]) -> None:
        self.webhook.send(str(channel_id), url, event)

    def run_step(self, recharge_id: str, step_id: str) -> None:
        recharges, distribution = self.runtime.recharges, self.runtime.distribution
        recharge = recharges.recharge(UUID(recharge_id))
        step = recharge.step
        if recharge.status != "pending" or step is None or step.id != step_id:
            return
        now = datetime.now(UTC)
        if step.due_at > now:
            self.enqueue_step(recharge.id, step_id, step.due_at)
            return
        product = distribution.product(recharge.product_id)
        gateway = self.runtime.gateway(distribution.platform(product.platform_id).gateway_url)
        if step.kind == "recharge":
            result = gateway.recharge(
                str(recharge.id), recharge.account, str(product.id), product.duration_days
            )
        else:
            result = gateway.order_status(str(recharge.id))
        recharges.record_step_result(recharge.id, step_id, step_result(result), datetime.now(UTC))

    def deliver_webhook(self, channel_id: str, url: str, event: dict[str, Any]) -> None:
        secret = webhook_secret(self.runtime.settings.secret_bytes, UUID(channel_id))
        deliver(self.http, url, secret, event)


def step_result(result: GatewayResult) -> StepResult:
    return StepResult(
        outcome=result.outcome,
        reason=result.reason,
        platform_order_id=result.platform_order_id,
        starts_at=result.membership_starts_at,
        ends_at=result.membership_ends_at,
    )


def start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=200)
    worker.start()
    return worker
