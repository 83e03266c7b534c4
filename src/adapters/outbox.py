"""The recharges log is the outbox: a dispatcher follows it with tracking and turns each
scheduled step and final state into work (broker messages, code settlement, webhooks).
A sweeper re-sends steps whose wake-up was lost and sends overdue sagas to review."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection

from adapters.jobs import Jobs, Runtime
from adapters.rate_limits import RateLimiter
from ledger.recharges.application import Recharges
from ledger.recharges.saga import Recharge
from projections.codes import CodesReader
from projections.recharges import RechargesReader
from projections.runner import ViewFeed

log = logging.getLogger(__name__)

WEBHOOK_NAMESPACE = uuid.UUID("5d2b1f7e-0c8a-4e6b-9f3d-7a1c2e4b6d80")


class Dispatcher(Projection[PostgresTrackingRecorder]):
    name = "dispatcher"
    runtime: Runtime
    jobs: Jobs

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        e = domain_event
        if isinstance(e, Recharge.StepScheduled):
            self.jobs.enqueue_step(e.originator_id, f"{e.number}-{e.kind}", e.due_at)
        elif isinstance(e, Recharge.Succeeded | Recharge.Failed):
            self._settle(e)
        self.view.insert_tracking(tracking)

    def _settle(self, e: Any) -> None:
        recharge = self.runtime.recharges.recharge(e.originator_id)
        distribution = self.runtime.distribution
        if isinstance(e, Recharge.Succeeded):
            distribution.redeem_code(recharge.code_id, recharge.id)
        else:
            distribution.release_code(recharge.code_id, recharge.id, e.reason)
        channel = distribution.channel(recharge.channel_id)
        if channel.webhook_url:
            event = final_state_event(e, recharge)
            self.jobs.enqueue_webhook(channel.id, channel.webhook_url, event)


def final_state_event(e: Any, recharge: Recharge) -> dict[str, Any]:
    status = "succeeded" if isinstance(e, Recharge.Succeeded) else "failed"
    return {
        "event_id": str(uuid.uuid5(WEBHOOK_NAMESPACE, f"{e.originator_id}:{e.originator_version}")),
        "type": f"recharge.{status}",
        "occurred_at": e.timestamp.isoformat(),
        "data": {
            "id": str(recharge.id),
            "status": status,
            "product_id": str(recharge.product_id),
            "account": recharge.account,
            "channel_id": str(recharge.channel_id),
            "failure": getattr(e, "reason", None),
        },
    }


DISPATCHER_FEED = ViewFeed(Recharges, Dispatcher, PostgresTrackingRecorder)
"""For reports of where the dispatcher stands (the running one is bound to its context)."""


def dispatcher_feed(runtime: Runtime, jobs: Jobs) -> ViewFeed:
    attributes = {"runtime": runtime, "jobs": jobs, "name": Dispatcher.name}
    bound: type[Dispatcher] = type("BoundDispatcher", (Dispatcher,), attributes)
    return ViewFeed(Recharges, bound, PostgresTrackingRecorder)


class Sweeper(threading.Thread):
    """Every few seconds: re-send steps overdue past a grace period (a lost wake-up or a
    worker that died), send sagas past their deadline to review, expire codes past their
    date (their units return to stock or become breakage)."""

    def __init__(
        self, runtime: Runtime, jobs: Jobs, pool: Any, every: float = 5.0, grace: float = 30.0
    ) -> None:
        super().__init__(name="sweeper", daemon=True)
        self.runtime = runtime
        self.jobs = jobs
        self.reader = RechargesReader(pool)
        self.codes = CodesReader(pool)
        self.every = every
        self.grace = grace
        self.limiter = RateLimiter(pool)
        self.sweeps = 0
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.sweeps += 1
            try:
                self.sweep()
                if self.sweeps % 720 == 1:
                    self.limiter.prune()
            except Exception:
                log.exception("sweep failed; trying again in %s s", self.every)

    def sweep(self) -> None:
        now = datetime.now(UTC)
        for recharge_id, step_id in self.reader.overdue_steps(self.grace):
            self.jobs.enqueue_step(recharge_id, step_id, now)
        for recharge_id in self.reader.past_deadline():
            self.runtime.recharges.check_deadline(recharge_id, now)
        for code_id in self.codes.due_for_expiry():
            self.runtime.distribution.expire_code(code_id, now)
