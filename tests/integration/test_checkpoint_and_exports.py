"""Signed checkpoints at a close, checked against the database later; and finance's CSV
exports of the journal and of the balances of a period."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from adapters.database import open_pool
from ledger.chain import GENESIS, link
from ledger.distribution.application import Distribution
from ledger.money import Money
from ledger.postings import Holds, Postings
from projections.catalog import APPLICATIONS, view
from projections.checkpoint import canonical, check, signing_key, take
from projections.journal import JournalReader
from projections.logs import read_events
from projections.positions import head
from projections.verify import verify
from tests.integration.test_rebuild import Golden, app_env, golden, ledger_url, run_ledger

pytestmark = pytest.mark.integration

__all__ = ["golden", "ledger_url"]  # fixtures shared with test_rebuild

SECRET = b"finance-close-secret"


def execute(url: str, statement: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def first_of(url: str, application: str, topic_ends: str) -> int:
    (row,) = execute(
        url,
        f"SELECT min(notification_id) FROM {application}_events WHERE topic LIKE %s",
        "%" + topic_ends,
    )
    assert row[0] is not None
    return int(row[0])


def rewrite_chain(url: str, application: str) -> None:
    """What someone with write access to the database could do after altering an event:
    recompute every link, so the chain is whole again."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {application}_events ORDER BY notification_id"
        ).fetchall()
        previous = GENESIS
        for notification_id, originator_id, version, topic, state in rows:
            previous = link(previous, notification_id, originator_id, version, topic, bytes(state))
            conn.execute(
                f"UPDATE {application}_events_chain SET hash = %s WHERE notification_id = %s",
                (previous, notification_id),
            )


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_a_checkpoint_taken_then_checked_holds(ledger_url: str) -> None:
    statement = take(ledger_url, SECRET)

    assert check(ledger_url, statement, SECRET) == []
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        for application in APPLICATIONS:
            at = head(conn, application.name)
            (found,) = conn.execute(
                f"SELECT hash FROM {application.name}_events_chain WHERE notification_id = %s",
                (at,),
            ).fetchall()
            assert statement["heads"][application.name] == {
                "notification_id": at,
                "hash": bytes(found[0]).hex(),
            }
        stored = conn.execute(
            "SELECT account, asset, posted, pending FROM balances ORDER BY account, asset"
        ).fetchall()
    assert statement["format"] == 2
    assert statement["balances"] == [
        {"account": account, "asset": asset, "posted": posted, "pending": pending}
        for account, asset, posted, pending in stored
    ], "journal and balances agree, each balance labelled"
    assert statement["trial_balance"] and set(statement["trial_balance"].values()) == {0}
    assert any(line["pending"] for line in statement["balances"]), "a hold is in it"


def test_a_checkpoint_of_the_first_format_still_checks(ledger_url: str) -> None:
    """Files written before balances were labelled ([account, asset, posted, pending]) are
    still checked, signature and balances."""
    statement = take(ledger_url, SECRET)
    old = {k: v for k, v in statement.items() if k not in ("format", "about", "signature")}
    old["balances"] = [
        [b["account"], b["asset"], b["posted"], b["pending"]] for b in statement["balances"]
    ]
    key = signing_key(SECRET)
    old["signature"] = key.sign(canonical(old)).hex()
    assert check(ledger_url, old, SECRET) == []

    old["balances"][0][2] += 1
    old["signature"] = key.sign(canonical(old)).hex()
    assert check(ledger_url, old, SECRET) == [
        "the journal no longer gives the checkpoint's balances at its heads"
    ]


def test_a_checkpoint_still_holds_after_later_events(ledger_url: str, golden: Golden) -> None:
    """Events after the close change nothing the checkpoint stated."""
    statement = take(ledger_url, SECRET)
    distribution = Distribution(env=app_env(ledger_url))
    try:
        distribution.deposit(uuid4(), golden.history.top, Money(99))
    finally:
        distribution.close()
    assert check(ledger_url, statement, SECRET) == []


def test_an_event_altered_before_the_head_is_reported(ledger_url: str) -> None:
    statement = take(ledger_url, SECRET)
    altered = first_of(ledger_url, "distribution", "StockPurchase.Recorded")
    execute(
        ledger_url,
        "UPDATE distribution_events SET state = state || ' '::bytea "
        "WHERE notification_id = %s RETURNING 1",
        altered,
    )
    problems = check(ledger_url, statement, SECRET)
    assert len(problems) == 1, problems
    assert problems[0].startswith("distribution: the chain no longer leads to the checkpoint's")
    assert f"found broken at {altered}" in problems[0]


def test_a_rewritten_chain_escapes_verify_but_not_an_earlier_checkpoint(
    ledger_url: str, golden: Golden
) -> None:
    """A channel renamed in the log and in the one view that shows names, and the chain
    recomputed: the chain is whole and every view agrees with a rebuild, so only the signed head
    hash of a checkpoint tells."""
    statement = take(ledger_url, SECRET)
    renamed = first_of(ledger_url, "distribution", "Channel.Registered")
    execute(
        ledger_url,
        "UPDATE distribution_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " '\"East region\"', '\"West region\"'), 'UTF8') WHERE notification_id = %s "
        "AND position('East region' IN convert_from(state, 'UTF8')) > 0 RETURNING 1",
        renamed,
    )
    rewrite_chain(ledger_url, "distribution")
    ((live,),) = execute(
        ledger_url, "SELECT live_version FROM projection_versions WHERE name = 'directory'"
    )
    execute(
        ledger_url,
        f"UPDATE directory_channels_v{live} SET name = 'West region' "
        "WHERE name = 'East region' RETURNING 1",
    )

    assert verify(ledger_url, app_env(ledger_url)).ok, "verify alone cannot see it"
    problems = check(ledger_url, statement, SECRET)
    assert len(problems) == 1 and "distribution: the chain no longer leads" in problems[0]


def test_a_log_cut_short_after_the_checkpoint_is_reported(ledger_url: str) -> None:
    statement = take(ledger_url, SECRET)
    top = statement["heads"]["cards"]["notification_id"]
    execute(ledger_url, "DELETE FROM cards_events WHERE notification_id = %s RETURNING 1", top)
    execute(
        ledger_url, "DELETE FROM cards_events_chain WHERE notification_id = %s RETURNING 1", top
    )
    problems = check(ledger_url, statement, SECRET)
    assert any(p.startswith("cards: the chain no longer leads") for p in problems), problems


def test_an_altered_balance_line_is_reported(ledger_url: str) -> None:
    statement = take(ledger_url, SECRET)
    execute(
        ledger_url,
        "UPDATE journal_lines_v1 SET amount = amount + 1 WHERE (application, notification_id, "
        "line) = (SELECT application, notification_id, line FROM journal_lines_v1 "
        "ORDER BY 2 LIMIT 1) RETURNING 1",
    )
    assert check(ledger_url, statement, SECRET) == [
        "the journal no longer gives the checkpoint's balances at its heads"
    ]


def test_a_checkpoint_file_edited_fails_its_signature(ledger_url: str) -> None:
    statement = take(ledger_url, SECRET)
    edited = json.loads(json.dumps(statement))
    edited["balances"][0]["posted"] += 100
    assert check(ledger_url, edited, SECRET) == [
        "the signature does not match the statement: the file was changed"
    ]
    edited = json.loads(json.dumps(statement))
    edited["heads"]["distribution"]["notification_id"] -= 1
    assert check(ledger_url, edited) == [
        "the signature does not match the statement: the file was changed"
    ]


def test_a_checkpoint_signed_with_another_key_is_reported(ledger_url: str) -> None:
    statement = take(ledger_url, b"someone else's secret")
    assert check(ledger_url, statement) == [], "the file is consistent with its own key"
    assert check(ledger_url, statement, SECRET) == [
        "the file was signed by another key than this installation's"
    ]


def test_ledger_checkpoint_and_checkpoint_verify_exit_0_then_1(
    ledger_url: str, tmp_path: Path
) -> None:
    env = {"LEDGER_SECRET_KEY": SECRET.decode()}
    path = tmp_path / "close.json"
    taken = run_ledger(ledger_url, "checkpoint", "--out", str(path), **env)
    assert taken.returncode == 0, taken.stderr
    statement = json.loads(path.read_text())
    heads = ", ".join(
        f"{name} at event {head['notification_id']}" for name, head in statement["heads"].items()
    )
    assert taken.stderr.splitlines()[-2:] == [
        f"checkpoint written to {path}",
        f"checkpoint of {statement['taken_at']}: {heads}; {len(statement['balances'])} account "
        f"balances; trial balance zero in all {len(statement['trial_balance'])} assets",
    ], "two lines a person reads, no dict repr"
    assert check(ledger_url, statement, SECRET) == []
    first = statement["balances"][0]
    assert set(first) == {"account", "asset", "posted", "pending"}, "each balance labelled"
    assert set(statement["about"]) == {"heads", "trial_balance", "balances"}

    held = run_ledger(ledger_url, "checkpoint", "verify", str(path), **env)
    assert held.returncode == 0, held.stderr
    assert f"OK: the checkpoint of {statement['taken_at']} holds" in held.stderr

    edited = tmp_path / "edited.json"
    edited.write_text(path.read_text().replace('"CNY"', '"USD"', 1))
    changed = run_ledger(ledger_url, "checkpoint", "verify", str(edited), **env)
    assert changed.returncode == 1
    assert "the signature does not match the statement" in changed.stderr


# ---------------------------------------------------------------------------------------------
# Exports


Line = tuple[str, int, int, str, str, int, str]


def journal_lines_from_the_logs(url: str) -> list[tuple[datetime, Line]]:
    """Every leg of every movement and hold, straight from the logs the journal follows:
    (event time, (application, position, line, account, asset, amount, kind))."""
    found = []
    for application_class in view("journal").applications:
        application = application_class(env=app_env(url))
        try:
            with psycopg.connect(url) as conn:
                for notification_id, stored in read_events(conn, application.name, 0):
                    event = application.mapper.to_domain_event(stored)
                    postings, holds = (
                        getattr(event, "postings", None),
                        getattr(event, "holds", None),
                    )
                    legs = [
                        ("posted", leg) for leg in postings or () if isinstance(postings, Postings)
                    ]
                    legs += [("pending", leg) for leg in holds or () if isinstance(holds, Holds)]
                    for number, (kind, leg) in enumerate(legs):
                        found.append(
                            (
                                event.timestamp,
                                (
                                    application.name,
                                    notification_id,
                                    number,
                                    leg.account,
                                    leg.asset,
                                    leg.amount,
                                    kind,
                                ),
                            )
                        )
        finally:
            application.close()
    return found


def in_time_order(lines: list[tuple[datetime, Line]]) -> list[Line]:
    """By the time recorded, then by position (application, event, line)."""
    return [line for _, line in sorted(lines, key=lambda found: (found[0], found[1][:3]))]


def export(url: str, what: str, *period: str) -> list[dict[str, str]]:
    done = run_ledger(url, "export", what, *period)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_ledger_export_journal_has_one_line_per_posting_of_the_period(
    ledger_url: str, golden: Golden
) -> None:
    start, end = golden.history.marks
    rows = export(ledger_url, "journal", "--from", start.isoformat(), "--to", end.isoformat())

    expected = [
        (at, line) for at, line in journal_lines_from_the_logs(ledger_url) if start <= at < end
    ]
    exported = [
        (
            r["application"],
            int(r["notification_id"]),
            int(r["line"]),
            r["account"],
            r["asset"],
            int(r["amount"]),
            r["kind"],
        )
        for r in rows
    ]
    assert exported == in_time_order(expected), "every leg of the period, in time order"
    assert exported != sorted(exported), "the history interleaves the logs: time order shows"
    times = [datetime.fromisoformat(r["recorded_at"]) for r in rows]
    assert times == sorted(times)
    assert {r["application"] for r in rows} == {"distribution", "cards", "settlements"}
    assert all(start <= datetime.fromisoformat(r["recorded_at"]) < end for r in rows)
    totals: Counter[str] = Counter()
    for r in rows:
        if r["kind"] == "posted":
            totals[r["asset"]] += int(r["amount"])
    assert totals and set(totals.values()) == {0}, f"posted lines sum to zero per asset: {totals}"
    assert any(r["kind"] == "pending" for r in rows), "the holds of the period are there too"


def test_the_journal_lines_without_a_period_are_every_line(ledger_url: str) -> None:
    pool = open_pool(ledger_url, size=1, name="export-test")
    try:
        lines = [tuple(row[1:]) for row in JournalReader(pool).lines(None, None)]
    finally:
        pool.close()
    assert lines == in_time_order(journal_lines_from_the_logs(ledger_url))


def test_ledger_export_balances_opening_plus_debits_minus_credits_is_closing(
    ledger_url: str, golden: Golden
) -> None:
    start, end = golden.history.marks
    rows = export(ledger_url, "balances", "--from", start.isoformat(), "--to", end.isoformat())

    legs = [
        (at, line) for at, line in journal_lines_from_the_logs(ledger_url) if line[6] == "posted"
    ]
    opening: Counter[tuple[str, str]] = Counter()
    closing: Counter[tuple[str, str]] = Counter()
    for at, (_, _, _, account, asset, amount, _) in legs:
        if at < start:
            opening[(account, asset)] += amount
        if at < end:
            closing[(account, asset)] += amount
    assert rows
    for r in rows:
        key = (r["account"], r["asset"])
        values = {k: int(r[k]) for k in ("opening", "debits", "credits", "closing")}
        assert values["opening"] + values["debits"] - values["credits"] == values["closing"], r
        assert values["debits"] >= 0 and values["credits"] >= 0
        assert (values["opening"], values["closing"]) == (opening[key], closing[key]), r
    assert {(r["account"], r["asset"]) for r in rows} == set(closing)
    assert any(int(r["opening"]) for r in rows) and any(int(r["debits"]) for r in rows)
