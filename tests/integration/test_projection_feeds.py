"""`ledger projections run --feeds views|sagas`: the views and the sagas (the saga starter, the
outbox dispatcher and the sweepers) in processes of their own, as deploy/Procfile runs them;
each feed in one process at a time still, by its advisory lock."""

from __future__ import annotations

import pytest

from adapters.settings import Settings
from api.runtime.background import Background, start_background
from projections.catalog import PROCESSES, VIEWS

pytestmark = pytest.mark.integration


def settings_for(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url="",
        ledger_sandbox=False,
        ledger_secret_key="integration-secret",
        ledger_code_hash_key="integration-code-key",
    )


def names(background: Background) -> set[str]:
    return {runner.source.name for runner in background.runners}


def test_the_views_and_the_sagas_run_apart_and_together_make_all(database_url: str) -> None:
    settings = settings_for(database_url)
    view_names = {feed.name for spec in VIEWS for feed in spec.feeds()}
    saga_names = {feed.name for feed in PROCESSES} | {"dispatcher<-recharges"}
    views = start_background(settings, database_url, with_worker=False, feeds="views")
    try:
        assert names(views) == view_names
        assert views.sweeper is None and views.settlement_sweeper is None
        assert views.shared is not None and views.shared.notifier.pace == 0.1, "views: 100 ms"
    finally:
        views.stop()
    sagas = start_background(settings, database_url, with_worker=False, feeds="sagas")
    try:
        assert names(sagas) == saga_names
        assert sagas.sweeper is not None and sagas.sweeper.is_alive()
        assert sagas.settlement_sweeper is not None and sagas.settlement_sweeper.is_alive()
        assert sagas.shared is not None and sagas.shared.notifier.pace == 0.02, "sagas: 20 ms"
    finally:
        sagas.stop()
    every = start_background(settings, database_url, with_worker=False)
    try:
        assert names(every) == view_names | saga_names
        assert every.sweeper is not None
        assert every.shared is not None and every.shared.notifier.pace == 0.02, "the sagas' pace"
    finally:
        every.stop()


def test_the_views_pace_is_a_setting_of_its_own(database_url: str) -> None:
    settings = settings_for(database_url).model_copy(
        update={"ledger_views_wake_pace_ms": 250, "ledger_wake_pace_ms": 5}
    )
    views = start_background(settings, database_url, with_worker=False, feeds="views")
    try:
        assert views.shared is not None and views.shared.notifier.pace == 0.25
    finally:
        views.stop()
    sagas = start_background(settings, database_url, with_worker=False, feeds="sagas")
    try:
        assert sagas.shared is not None and sagas.shared.notifier.pace == 0.005
    finally:
        sagas.stop()
