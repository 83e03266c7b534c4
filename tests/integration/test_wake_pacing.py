"""The notifier wakes a log's runners at most once every `pace` seconds: a lone notification
wakes them at once, a burst is gathered into one more wake-up when the pace is over, and no
notification is left without a wake-up after it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from projections.runner import Notifier, Pacer

CHANNEL = "paced_log"


def test_a_lone_notification_wakes_at_once_and_a_burst_after_it_once_more() -> None:
    pacer = Pacer(0.05)
    assert pacer.arrived(CHANNEL, 10.0), "the first after a quiet spell wakes now"
    assert not pacer.arrived(CHANNEL, 10.01)
    assert not pacer.arrived(CHANNEL, 10.02), "gathered with the one before"
    assert pacer.until_next(10.02, 0.2) == pytest.approx(0.03)
    assert pacer.due(10.04) == []
    assert pacer.due(10.051) == [CHANNEL]
    assert pacer.due(10.06) == [], "taken once"
    assert pacer.until_next(10.06, 0.2) == 0.2
    assert not pacer.arrived(CHANNEL, 10.07), "within the pace of the gathered wake-up"
    assert pacer.due(10.11) == [CHANNEL]
    assert pacer.arrived(CHANNEL, 10.2), "quiet again: at once"


def test_channels_are_paced_apart() -> None:
    pacer = Pacer(0.05)
    assert pacer.arrived("a", 1.0)
    assert pacer.arrived("b", 1.01), "another log's wake-up is its own"
    assert not pacer.arrived("a", 1.02)
    assert pacer.due(1.06) == ["a"]


def test_no_pace_wakes_for_every_notification() -> None:
    pacer = Pacer(0.0)
    assert all(pacer.arrived(CHANNEL, 5.0 + i * 1e-6) for i in range(5))
    assert pacer.due(float("inf")) == []


@pytest.mark.integration
def test_a_burst_of_notifications_wakes_the_runners_twice_and_the_last_is_not_missed(
    database_url: str,
) -> None:
    pace = 0.4
    notifier = Notifier(database_url, pace=pace)
    woken = threading.Event()
    times: list[float] = []

    class Recorded(threading.Event):
        def set(self) -> None:
            times.append(time.monotonic())
            woken.set()

    watcher = Recorded()
    notifier.watch(CHANNEL, watcher)
    try:
        assert woken.wait(10), "the notifier wakes a new watcher once it listens"
        time.sleep(pace * 1.5)  # that wake-up's pace over
        times.clear()
        woken.clear()
        with psycopg.connect(database_url, autocommit=True) as conn:
            sent = time.monotonic()
            for n in range(6):
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(n)))
                time.sleep(0.01)
        assert woken.wait(5)
        time.sleep(pace * 2)
        assert len(times) == 2, f"one wake-up at once, one for the rest: {times}"
        assert times[0] - sent < pace / 2, "the first of the burst is not held back"
        assert times[1] - times[0] >= pace * 0.9, "the rest gathered until the pace was over"
        assert notifier.wakes == 2, "six notifications, two wake-ups"
    finally:
        notifier.unwatch(CHANNEL, watcher)
        notifier.close()
