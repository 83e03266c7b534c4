"""The recharges log is the outbox: a dispatcher follows it with tracking and turns each
scheduled step (a recharge's or a refund's) into a broker message and each final state or
refund outcome into its settlement. A sweeper re-sends steps whose wake-up was lost, sends
overdue sagas to review and expires codes.

Behind, the dispatcher handles a run of the events already read and records the tracking of
the last once (Dispatcher.process_run)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection

from adapters.audit_log import AuditLog
from adapters.rate_limits import RateLimiter
from adapters.verification import prune_known_senders
from ledger.cards.application import Cards
from ledger.cards.settlements import MerchantSettlements
from ledger.clock import utc_now
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.recharges.decisions import Step
from ledger.recharges.ports import StepQueue
from ledger.recharges.refunds import RefundStep
from ledger.recharges.saga import Recharge
from ledger.recharges.steps import RechargeSteps
from ledger.settlement.late_successes import LateSuccesses
from projections.codes import CodesReader
from projections.directory import DirectoryReader
from projections.merchant_statements import MerchantStatementsReader
from projections.recharges import RechargesReader
from projections.runner import ViewFeed

log = logging.getLogger(__name__)


class SagasInFlight:
    """The recharges the dispatcher follows, folded from their events as it handles them, so
    a final state is settled without reading the recharge again. Only a recharge followed
    from its first event, with no event missed, is kept (a dispatcher started mid-saga reads
    it); a final one is let go (a later refund's outcome is rare: read then); at most
    `limit`, the oldest let go first."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.followed: dict[UUID, Recharge] = {}

    def follow(self, e: Any) -> Recharge | None:
        """The recharge as of `e` if every event before it was followed, else None."""
        recharge_id: UUID = e.originator_id
        if isinstance(e, Recharge.Requested):
            recharge = e.mutate(None)
        else:
            recharge = self.followed.pop(recharge_id, None)
            if recharge is None:
                return None
            if recharge.version == e.originator_version - 1:
                recharge = e.mutate(recharge)
            elif recharge.version > e.originator_version:  # a run handled again: catching up
                self.followed[recharge_id] = recharge
                return None
            elif recharge.version < e.originator_version:  # an event missed: read when settled
                return None
        if recharge.is_final:
            return recharge
        self.followed[recharge_id] = recharge
        if len(self.followed) > self.limit:
            del self.followed[next(iter(self.followed))]
        return recharge


HANDLING_THREADS = 4
"""The slow events of a run handled at once: each waits on the broker (a step's message, its
delivery confirmed) or is a code's save (a final state's settlement: saves arriving together
are one group commit)."""

SLOW = (
    Recharge.StepScheduled,
    Recharge.RefundStepScheduled,
    Recharge.Succeeded,
    Recharge.Failed,
    Recharge.RefundAccepted,
    Recharge.RefundRejected,
)
"""The events whose handling waits on the broker or the database."""

ACTED_ON = (*SLOW, Recharge.DiscrepancyFound)
"""The events `handle` acts on; any other is only followed."""


class Dispatcher(Projection[PostgresTrackingRecorder]):
    name = "dispatcher"
    steps: RechargeSteps
    queue: StepQueue
    late_successes: LateSuccesses | None = None

    def __init__(self, view: PostgresTrackingRecorder) -> None:
        super().__init__(view)
        self.sagas = SagasInFlight()
        self._handling: ThreadPoolExecutor | None = None

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.dispatch(domain_event)
        self.view.insert_tracking(tracking)

    def process_run(self, run: Sequence[tuple[Any, Tracking]]) -> None:
        """Handle each event of a run, then track the last: one tracking write a run (at
        least once still: an event is tracked only after it and every event before it were
        handled).

        The slow events of different recharges are handled at once, on a few threads, and
        each recharge's events in the log's order: an event waits only for its own recharge's
        event in hand, if any. (The dispatcher, one event at a time on its thread, bounded
        how fast recharges completed: it waited for each step's message to be confirmed by
        the broker, and, before any other event, for every settlement begun.) A run that
        fails part-way tracks the events before the first that failed or was not handled
        (every one begun ends first), then the failure goes on; an event of another recharge
        after it may have been handled, and is handled again after the restart, as the
        handlers allow (every one is idempotent)."""
        begun: list[tuple[Future[Any] | None, Tracking]] = []  # None: handled on this thread
        in_hand: dict[UUID, Future[Any]] = {}  # each recharge's slow event being handled
        try:
            for event, tracking in run:
                recharge_id = getattr(event, "originator_id", None)
                if isinstance(event, SLOW) and recharge_id is not None and len(run) > 1:
                    before = in_hand.pop(recharge_id, None)
                    followed = self.follow(event)
                    after = self._pool().submit(self._handle_after, before, event, followed)
                    in_hand[recharge_id] = after
                    begun.append((after, tracking))
                    continue
                if isinstance(event, ACTED_ON) and recharge_id in in_hand:
                    # its recharge's event before it first; a failure stops the run here
                    in_hand.pop(recharge_id).result()
                self.dispatch(event)  # the rest change nothing outside: followed, in order
                begun.append((None, tracking))
        except BaseException:
            handled = self._handled(begun)
            if handled is not None:
                # what was handled need not be handled again after the restart
                with contextlib.suppress(Exception):
                    self.view.insert_tracking(handled)
            raise
        handled = self._handled(begun)
        if handled is not None:
            self.view.insert_tracking(handled)
        for future, _ in begun:
            if future is not None:
                future.result()  # the first failure goes on, what was before it tracked

    def _handle_after(self, before: Future[Any] | None, event: Any, followed: Any) -> None:
        if before is not None:
            before.result()  # the recharge's event before this one, handled first
        self.handle(event, followed)

    @staticmethod
    def _handled(begun: list[tuple[Future[Any] | None, Tracking]]) -> Tracking | None:
        """Once every event begun ended: the last before which every one was handled."""
        wait([future for future, _ in begun if future is not None])
        handled = None
        for future, tracking in begun:
            if future is not None and (future.cancelled() or future.exception() is not None):
                break
            handled = tracking
        return handled

    def _pool(self) -> ThreadPoolExecutor:
        if self._handling is None:
            self._handling = ThreadPoolExecutor(HANDLING_THREADS, thread_name_prefix="dispatch")
        return self._handling

    def dispatch(self, e: Any) -> None:
        """What one event of the recharges log asks of the outside world."""
        self.handle(e, self.follow(e))

    def follow(self, e: Any) -> Recharge | None:
        """The recharge as of `e`, when followed from its start (in the log's order)."""
        return self.sagas.follow(e) if isinstance(e, Recharge.Event) else None

    def handle(self, e: Any, followed: Recharge | None) -> None:
        if isinstance(e, Recharge.StepScheduled):
            step = Step(e.number, e.kind, e.due_at)
            self.queue.enqueue_step(e.originator_id, step.id, step.due_at)
        elif isinstance(e, Recharge.Succeeded | Recharge.Failed):
            self.steps.settle(e.originator_id, followed)
        elif isinstance(e, Recharge.RefundStepScheduled):
            step_id = RefundStep(e.number, e.kind, e.due_at).id
            self.queue.enqueue_step(e.originator_id, step_id, e.due_at)
        elif isinstance(e, Recharge.RefundAccepted | Recharge.RefundRejected):
            self.steps.settle_refund(e.originator_id, e.refund_id)
        elif isinstance(e, Recharge.DiscrepancyFound) and self.late_successes is not None:
            self.late_successes.open(e.originator_id, e.reason, e.timestamp)


DISPATCHER_FEED = ViewFeed(Recharges, Dispatcher, PostgresTrackingRecorder)
"""For reports of where the dispatcher stands (the running one is bound to its context)."""


def dispatcher_feed(
    steps: RechargeSteps, queue: StepQueue, late_successes: LateSuccesses | None = None
) -> ViewFeed:
    attributes = {
        "steps": steps,
        "queue": queue,
        "late_successes": late_successes,
        "name": Dispatcher.name,
    }
    bound: type[Dispatcher] = type("BoundDispatcher", (Dispatcher,), attributes)
    return ViewFeed(Recharges, bound, PostgresTrackingRecorder)


class Sweeper(threading.Thread):
    """Every few seconds: re-send steps overdue past a grace period (a lost wake-up or a
    worker that died), send sagas past their deadline to review, expire codes past their
    date (their units return to stock or become breakage), pay out again withdrawals left
    pending past `payout_grace` (with the same payout id: paid once)."""

    def __init__(
        self,
        steps: RechargeSteps,
        distribution: Distribution,
        pool: Any,
        every: float = 5.0,
        grace: float = 30.0,
        cards: Cards | None = None,
        payout_grace: float = 60.0,
        audit_retention_days: int = 90,
    ) -> None:
        super().__init__(name="sweeper", daemon=True)
        self.steps = steps
        self.distribution = distribution
        self.reader = RechargesReader(pool)
        self.codes = CodesReader(pool)
        self.cards = cards
        self.directory = DirectoryReader(pool)
        self.merchant_statements = MerchantStatementsReader(pool)
        self.merchant_settlements = (
            MerchantSettlements(cards, self.merchant_statements) if cards else None
        )
        self.payout_grace = payout_grace
        self.every = every
        self.grace = grace
        self.pool = pool
        self.limiter = RateLimiter(pool)
        self.audit_log = AuditLog(pool)
        self.audit_retention_days = audit_retention_days
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
                    prune_known_senders(self.pool)
                    self.audit_log.prune(self.audit_retention_days)
            except Exception:
                log.exception("sweep failed; trying again in %s s", self.every)

    def sweep(self) -> None:
        self.steps.resend_overdue(self.reader.overdue_steps(self.grace))
        self.steps.resend_overdue(self.reader.overdue_refund_steps(self.grace))
        self.steps.check_deadlines(self.reader.past_deadline())
        now = utc_now()
        for code_id in self.codes.due_for_expiry():
            self.distribution.expire_code(code_id, now)
        self.finish_withdrawals()
        self.finish_merchant_settlements()

    def finish_withdrawals(self) -> None:
        if self.cards is None or self.cards.payouts is None:
            return
        for withdrawal_id in self.directory.pending_withdrawals(self.payout_grace):
            try:
                self.cards.retry_withdrawal(withdrawal_id)
            except Exception:
                log.exception("withdrawal %s: payout retry failed; next sweep", withdrawal_id)

    def finish_merchant_settlements(self) -> None:
        """Merchant settlements left collecting or paying past `payout_grace` (their process
        died, or a payout's answer was lost or refused): moved on, each payout asked again
        with its own id, so it is paid once."""
        if self.merchant_settlements is None or self.cards is None or self.cards.payouts is None:
            return
        for settlement_id in self.merchant_statements.unfinished(self.payout_grace):
            try:
                self.merchant_settlements.advance(settlement_id)
            except Exception:
                log.exception("merchant settlement %s: not finished; next sweep", settlement_id)
