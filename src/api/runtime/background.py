"""What runs beside the API: projection runners, the saga starter, the outbox dispatcher,
the sweeper, and (without a broker server) the dramatiq worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import dramatiq

from adapters.database import application_env
from adapters.settings import Settings
from api.runtime.dispatcher import Sweeper, dispatcher_feed
from api.runtime.settlements import SettlementSweeper
from api.runtime.worker import Jobs, Runtime, make_broker, start_worker
from ledger.cards.application import Cards
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.settlement.application import Settlements
from projections.catalog import PROCESSES, VIEWS
from projections.runner import LockSession, Shared, SupervisedRunner


@dataclass
class Background:
    runtime: Runtime
    broker: dramatiq.Broker
    jobs: Jobs
    pool: Any
    runners: list[SupervisedRunner] = field(default_factory=list)
    sweeper: Sweeper | None = None
    settlement_sweeper: SettlementSweeper | None = None
    worker: dramatiq.Worker | None = None
    session: LockSession | None = None
    shared: Shared | None = None
    supervisor: Any = None

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()  # before the embedded server's own clean-up stops it
        threads: list[Any] = [*self.runners, *([self.sweeper] if self.sweeper else [])]
        threads += [self.settlement_sweeper] if self.settlement_sweeper else []
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(timeout=10)
        if self.session is not None:
            self.session.close()
        if self.shared is not None:
            self.shared.close()
        if self.worker is not None:
            self.worker.stop(timeout=5_000)
        self.broker.close()
        self.runtime.close()


Feeds = Literal["all", "views", "sagas"]


def wake_pace_ms(settings: Settings, feeds: Feeds) -> int:
    """How often a process's runners of one log may be woken. A recharge's saga waits for the
    saga starter and the dispatcher, never for a view: a process of the views alone gathers
    more of a steady load into each round (its fixed cost paid fewer times, more of the two
    cores left to the acceptance and the sagas). A process that runs both keeps the sagas'."""
    return settings.ledger_views_wake_pace_ms if feeds == "views" else settings.ledger_wake_pace_ms


def start_background(
    settings: Settings,
    database_url: str,
    *,
    with_worker: bool,
    run_projections: bool = True,
    feeds: Feeds = "all",
) -> Background:
    """The runners, sweepers and (without a broker server) the worker of a process. `feeds`
    splits the runners between processes: the views in one, the sagas (saga starter, outbox
    dispatcher, sweepers) in another, so that neither waits for the other's share of one
    interpreter lock; each feed still runs in one process at a time (its advisory lock)."""
    runtime = Runtime(settings, database_url, runners=run_projections)
    broker = make_broker(settings.broker_url)
    jobs = Jobs(broker, runtime)
    background = Background(runtime, broker, jobs, runtime.pool)
    if settings.embedded:
        from adapters.embedded import Supervisor

        background.supervisor = Supervisor(settings.ledger_data_dir)
        background.supervisor.start()
    if run_projections:
        env = application_env(settings, database_url)
        views = [feed for spec in VIEWS for feed in spec.feeds()]
        sagas = [*PROCESSES, dispatcher_feed(jobs.steps, jobs, runtime.late_successes)]
        by_kind: dict[str, list[Any]] = {"all": [*views, *sagas], "views": views, "sagas": sagas}
        chosen = by_kind[feeds]
        background.session = LockSession(database_url)
        background.shared = Shared(
            env,
            database_url,
            applications={
                Distribution: runtime.distribution,
                Recharges: runtime.recharges,
                Cards: runtime.cards,
                Settlements: runtime.settlements,
            },
            pools={
                "views": runtime.budget.env("views"),
                "processes": runtime.budget.env("processes"),
            },
            prepare=runtime.health.register_application,
            pace=wake_pace_ms(settings, feeds) / 1000,
        )
        background.runners = [
            SupervisedRunner(feed, database_url, env, background.session, background.shared)
            for feed in chosen
        ]
        if feeds != "views":
            background.sweeper = Sweeper(
                jobs.steps,
                runtime.distribution,
                background.pool,
                audit_retention_days=settings.ledger_audit_retention_days,
                cards=runtime.cards,
                payout_grace=settings.ledger_payout_grace_seconds,
            )
            background.settlement_sweeper = SettlementSweeper(
                runtime.settlement_steps, background.pool
            )
        threads: list[Any] = [*background.runners]
        threads += [background.sweeper, background.settlement_sweeper] if feeds != "views" else []
        for thread in threads:
            thread.start()
    if with_worker:
        background.worker = start_worker(broker, settings.ledger_worker_threads)
    return background
