"""The recharge saga's work with the outside world: run a step through the platform's gateway
(a recharge's, or a refund's), settle a final state or a refund's outcome on its code and tell
the channel, wake steps whose wake-up was lost and send sagas past their deadline to review.

Every use case here may run more than once for one cause (messages are delivered at least
once) and does no harm the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from ledger.clock import Clock, utc_now
from ledger.distribution.application import Distribution
from ledger.distribution.catalogue import Product
from ledger.errors import StateConflict
from ledger.recharges.application import Recharges
from ledger.recharges.decisions import Step, StepResult
from ledger.recharges.ports import Notifications, PlatformGateways, StepQueue
from ledger.recharges.refunds import RefundAnswer, RefundStepKind, is_refund_step, step_to_run
from ledger.recharges.saga import Recharge

WEBHOOK_NAMESPACE = uuid.UUID("5d2b1f7e-0c8a-4e6b-9f3d-7a1c2e4b6d80")
PRODUCTS_KEPT = 1024
"""Products a process keeps as read (a catalogue holds far fewer; past this, it starts over)."""


class RechargeSteps:
    """The saga's steps and its settlement, over the recharges and distribution applications."""

    def __init__(
        self,
        recharges: Recharges,
        distribution: Distribution,
        gateways: PlatformGateways,
        queue: StepQueue,
        notifications: Notifications,
        clock: Clock = utc_now,
    ) -> None:
        self.recharges = recharges
        self.distribution = distribution
        self.gateways = gateways
        self.queue = queue
        self.notifications = notifications
        self.clock = clock
        self.products: dict[UUID, Product] = {}

    def run_step(self, recharge_id: UUID, step_id: str) -> None:
        """Ask the platform what the saga's current step asks, and record the answer.

        A step that is no longer current is skipped; the platform credits at most once per
        order number (the recharge id), so a step run twice credits once.
        """
        if is_refund_step(step_id):
            self.run_refund_step(recharge_id, step_id)
            return
        recharge = self.recharges.recharge(recharge_id)
        step = recharge.step
        if recharge.status != "pending" or step is None or step.id != step_id:
            return
        if step.due_at > self.clock():
            self.queue.enqueue_step(recharge.id, step_id, step.due_at)
            return
        result = self._ask_platform(recharge, step)
        self.recharges.record_step_result(recharge.id, step_id, result, self.clock(), recharge)

    def settle(self, recharge_id: UUID, final: Recharge | None = None) -> dict[str, Any] | None:
        """A succeeded recharge redeems its code, a failed one releases it for another try;
        then the channel's webhook, if it has one, is sent the final state (also returned).
        Settling again changes no code and sends the event under the same id. `final`, the
        recharge as of its Succeeded or Failed event when the caller holds it (the dispatcher
        follows the log), is not read again."""
        recharge = final if final is not None else self.recharges.recharge(recharge_id)
        if recharge.status == "refunded":  # settled late: as it was when it succeeded
            recharge = self.recharges.repository.get(
                recharge_id, version=recharge.succeeded_version
            )
        if not recharge.is_final:
            raise StateConflict(f"only a final recharge is settled; this one is {recharge.status}")
        if recharge.status == "succeeded":
            self.distribution.redeem_code(recharge.code_id, recharge.id)
        else:
            assert recharge.failure is not None, "a failed recharge carries its reason"
            self.distribution.release_code(recharge.code_id, recharge.id, recharge.failure)
        channel = self.distribution.channel(recharge.channel_id)
        if not channel.webhook_url:
            return None
        event = final_state_event(recharge)
        self.notifications.notify(channel.id, channel.webhook_url, event)
        return event

    def run_refund_step(self, recharge_id: UUID, step_id: str) -> None:
        """Ask the platform what the refund's current step asks, and record the answer.

        The sending of a refund is recorded before the call leaves, so a step run again
        after its process died asks the refund's status instead: the platform sees one
        request per refund number (which is also its idempotency key).
        """
        recharge = self.recharges.recharge(recharge_id)
        step, refund = recharge.refund_step, recharge.refund
        if refund is None or refund["status"] != "pending" or step is None or step.id != step_id:
            return
        if step.due_at > self.clock():
            self.queue.enqueue_step(recharge.id, step_id, step.due_at)
            return
        asked = step_to_run(step, step_id in recharge.refund_steps_sent)
        if asked == "refund":
            recharge = self.recharges.refund_sending(recharge.id, step_id, recharge)
        answer = self._ask_refund(recharge, refund["refund_no"], asked)
        self.recharges.record_refund_answer(
            recharge.id, step_id, asked, answer, self.clock(), recharge
        )

    def settle_refund(self, recharge_id: UUID, refund_id: UUID) -> dict[str, Any] | None:
        """A refund's outcome: accepted, the consumed unit returns to the issuing channel's
        stock on hand (once); either way the channel's webhook, if it has one, is told
        (`recharge.refunded` or `recharge.refund_rejected`, the same event id every time)."""
        recharge = self.recharges.recharge(recharge_id)
        refund = recharge.refunds.get(str(refund_id))
        if refund is None or refund["status"] == "pending":
            raise StateConflict(f"refund {refund_id} of recharge {recharge_id} is not decided")
        if refund["status"] == "accepted":
            self.distribution.return_refunded_unit(
                recharge.code_id, recharge.id, refund["refund_no"]
            )
        channel = self.distribution.channel(recharge.channel_id)
        if not channel.webhook_url:
            return None
        event = refund_event(recharge, refund)
        self.notifications.notify(channel.id, channel.webhook_url, event)
        return event

    def resend_overdue(self, steps: Iterable[tuple[UUID, str]]) -> None:
        """Steps still waiting well past their time lost their wake-up: send them again now."""
        now = self.clock()
        for recharge_id, step_id in steps:
            self.queue.enqueue_step(recharge_id, step_id, now)

    def check_deadlines(self, recharge_ids: Iterable[UUID]) -> None:
        """Sagas still pending past their deadline go to an operator for review."""
        now = self.clock()
        for recharge_id in recharge_ids:
            self.recharges.check_deadline(recharge_id, now)

    def _product(self, product_id: UUID) -> Product:
        """A product as registered: nothing changes a product after (catalogue.Product has
        no other event), so each process reads it once. The platform, whose gateway can
        move, is read fresh at every call."""
        product = self.products.get(product_id)
        if product is None:
            product = self.distribution.product(product_id)
            if len(self.products) >= PRODUCTS_KEPT:
                self.products.clear()
            self.products[product_id] = product
        return product

    def _ask_platform(self, recharge: Recharge, step: Step) -> StepResult:
        product = self._product(recharge.product_id)
        platform = self.distribution.platform(product.platform_id)
        gateway = self.gateways.gateway_for(platform.gateway_url)
        order_no = str(recharge.id)
        if step.kind == "recharge":
            return gateway.recharge(
                order_no, recharge.account, str(product.id), product.duration_days
            )
        return gateway.order_status(order_no)

    def _ask_refund(
        self, recharge: Recharge, refund_no: str, asked: RefundStepKind
    ) -> RefundAnswer:
        product = self._product(recharge.product_id)
        platform = self.distribution.platform(product.platform_id)
        gateway = self.gateways.gateway_for(platform.gateway_url)
        if asked == "refund":
            return gateway.refund(str(recharge.id), refund_no, product.wholesale_cost.amount)
        return gateway.refund_status(refund_no)


def final_state_event(recharge: Recharge) -> dict[str, Any]:
    """The webhook event of a final recharge. Nothing follows a final state, so the saga's
    version and time are those of its Succeeded or Failed event: the id stays the same
    however often it is sent, and the receiver de-duplicates on it."""
    return {
        "event_id": str(uuid.uuid5(WEBHOOK_NAMESPACE, f"{recharge.id}:{recharge.version}")),
        "type": f"recharge.{recharge.status}",
        "occurred_at": recharge.modified_on.isoformat(),
        "data": {
            "id": str(recharge.id),
            "status": recharge.status,
            "product_id": str(recharge.product_id),
            "account": recharge.account,
            "channel_id": str(recharge.channel_id),
            "failure": recharge.failure,
        },
    }


def refund_event(recharge: Recharge, refund: dict[str, Any]) -> dict[str, Any]:
    """The webhook event of a refund's outcome; its id is fixed by the refund number and the
    outcome, so the receiver de-duplicates however often it is sent."""
    status = "refunded" if refund["status"] == "accepted" else "refund_rejected"
    decided_at = refund["decided_at"]
    return {
        "event_id": str(
            uuid.uuid5(WEBHOOK_NAMESPACE, f"{recharge.id}:{refund['refund_no']}:{status}")
        ),
        "type": f"recharge.{status}",
        "occurred_at": decided_at.isoformat() if decided_at else None,
        "data": {
            "id": str(recharge.id),
            "status": "refunded" if status == "refunded" else "succeeded",
            "product_id": str(recharge.product_id),
            "account": recharge.account,
            "channel_id": str(recharge.channel_id),
            "refund": {
                "id": refund["id"],
                "refund_no": refund["refund_no"],
                "status": refund["status"],
                "reason": refund["reason"],
                "rejection": refund["rejection"],
            },
        },
    }
