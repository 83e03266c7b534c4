"""The views following one log commit a round of runs in one transaction; a round that fails
leaves each view to apply its run by itself, as it would alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from projections.rounds import CommitRounds


class Datastore:
    """Records what each transaction wrote, and whether it committed."""

    single_row_tracking = False

    def __init__(self) -> None:
        self.transactions: list[tuple[list[str], bool]] = []

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[list[str]]:
        written: list[str] = []
        try:
            yield written
        except BaseException:
            self.transactions.append((written, False))
            raise
        self.transactions.append((written, commit))


class View:
    def __init__(self, name: str, datastore: Datastore, fails: BaseException | None = None):
        self.view_name = name
        self.datastore = datastore
        self.fails = fails

    def apply_leading(self, curs: list[str], run: Any) -> list[Any]:
        if self.fails is not None:
            raise self.fails
        curs.append(f"{self.view_name}:{len(run)}")
        return []

    def _insert_tracking(self, curs: list[str], tracking: Any) -> None:
        curs.append(f"{self.view_name} at {tracking}")


class Runner:
    """A member and its projection: hands in one run, notes if it applied it by itself."""

    def __init__(self, view: View, coming: bool = True) -> None:
        self.view = view
        self.coming = coming
        self.alone: list[Any] = []
        self.error: BaseException | None = None

    def expecting(self) -> bool:
        return self.coming

    def process_run(self, run: Any) -> None:
        self.alone.append(run)

    def hand_in(self, rounds: CommitRounds, run: Any) -> threading.Thread:
        def apply() -> None:
            try:
                rounds.apply(self, self, run)  # type: ignore[arg-type]
            except BaseException as error:  # noqa: BLE001 - looked at by the test
                self.error = error
            finally:
                self.coming = False

        thread = threading.Thread(target=apply)
        thread.start()
        return thread


def run(length: int, last: int = 0) -> list[tuple[str, int]]:
    """Events and their positions, the last at `last` (or at `length`)."""
    last = last or length
    return [("event", last - length + n + 1) for n in range(length)]


def round_of(runners: list[Runner], rounds: CommitRounds) -> None:
    for runner in runners:
        rounds.join(runner)
    threads = [runner.hand_in(rounds, run(n + 1)) for n, runner in enumerate(runners)]
    for thread in threads:
        thread.join(10)


def test_the_views_of_a_round_commit_in_one_transaction_each_with_its_run() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=5.0)
    runners = [Runner(View(name, datastore)) for name in ("journal", "balances", "codes")]

    round_of(runners, rounds)

    assert datastore.transactions == [
        (
            ["balances:2", "codes:3", "journal:1", "balances at 2", "codes at 3", "journal at 1"],
            True,
        )
    ]
    assert rounds.shared_commits == 1
    assert all(r.alone == [] and r.error is None for r in runners)


def test_a_failing_view_rolls_the_round_back_and_each_view_applies_its_run_alone() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=5.0)
    failing = View("balances", datastore, fails=RuntimeError("poisoned"))
    runners = [
        Runner(View("journal", datastore)),
        Runner(failing),
        Runner(View("codes", datastore)),
    ]

    round_of(runners, rounds)

    assert [committed for _, committed in datastore.transactions] == [False]
    assert rounds.shared_commits == 0
    assert [r.alone for r in runners] == [[run(1)], [run(2)], [run(3)]]
    assert all(r.error is None for r in runners)


def test_a_lost_connection_stops_every_runner_of_the_round() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=5.0)
    lost = psycopg.OperationalError("server closed the connection")
    runners = [Runner(View("journal", datastore)), Runner(View("balances", datastore, fails=lost))]

    round_of(runners, rounds)

    assert all(r.error is lost and r.alone == [] for r in runners)


def test_a_deadlock_leaves_each_view_to_apply_its_run_alone() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=5.0)
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    runners = [Runner(View("journal", datastore)), Runner(View("balances", datastore, deadlock))]

    round_of(runners, rounds)

    assert all(r.error is None and len(r.alone) == 1 for r in runners)


def test_a_run_alone_is_applied_by_its_view_and_idle_views_are_not_waited_for() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=5.0)
    busy, idle = Runner(View("journal", datastore)), Runner(View("codes", datastore), False)
    rounds.join(idle)
    rounds.join(busy)

    began = time.monotonic()
    busy.hand_in(rounds, run(1)).join(10)

    assert time.monotonic() - began < 1.0, "the round waited for a view with nothing coming"
    assert busy.alone == [run(1)] and datastore.transactions == []


def test_a_view_whose_run_is_late_is_waited_for_no_longer_than_the_window() -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=0.2)
    busy, late = Runner(View("journal", datastore)), Runner(View("codes", datastore))
    rounds.join(late)
    rounds.join(busy)

    began = time.monotonic()
    busy.hand_in(rounds, run(1)).join(10)

    assert 0.2 <= time.monotonic() - began < 2.0
    assert busy.alone == [run(1)]


@pytest.mark.parametrize("members", [2, 6])
def test_rounds_one_after_another_apply_every_run_once(members: int) -> None:
    datastore = Datastore()
    rounds = CommitRounds(window=0.05)
    runners = [Runner(View(f"view{n}", datastore)) for n in range(members)]
    for runner in runners:
        rounds.join(runner)

    def hand_in_many(runner: Runner) -> None:
        for n in range(20):
            rounds.apply(runner, runner, run(1, n + 1))  # type: ignore[arg-type]
        runner.coming = False

    threads = [threading.Thread(target=hand_in_many, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    in_rounds = sum(len(written) // 2 for written, committed in datastore.transactions if committed)
    alone = sum(len(r.alone) for r in runners)
    assert in_rounds + alone == 20 * members
    assert rounds.shared_commits == len(datastore.transactions) and rounds.shared_commits > 0
