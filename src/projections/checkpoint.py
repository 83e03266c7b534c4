"""Signed checkpoints at a close: the head of every log with its chain hash, the trial
balance and every account's balance, signed with Ed25519 so anyone holding the public key can
check the file; `check` also compares it with the database: the chain still leads to those
heads, and the journal still gives those balances there."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg.sql import SQL, Identifier

from ledger.chain import GENESIS, link
from projections.catalog import APPLICATIONS, view
from projections.logs import read_chained
from projections.positions import head, live_tracking_name, position


class CheckpointMismatch(Exception):
    pass


def signing_key(secret: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"checkpoint-signing\n" + secret).digest()
    )


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def canonical(statement: dict[str, Any]) -> bytes:
    body = {k: v for k, v in statement.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def take(database_url: str, secret: bytes, wait: float = 10.0) -> dict[str, Any]:
    """A statement as of one moment at which the journal has caught up with every log."""
    deadline = time.monotonic() + wait
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                heads = {a.name: head(conn, a.name) for a in APPLICATIONS}
                journal = live_tracking_name(conn, "journal")
                followed = [a.name for a in view("journal").applications]
                if all(position(conn, journal, n) >= heads[n] for n in followed):
                    statement = statement_at(conn, heads)
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the journal did not catch up with the logs; is a runner on?")
            time.sleep(0.2)
    key = signing_key(secret)
    statement["public_key"] = public_key_hex(key)
    statement["signature"] = key.sign(canonical(statement)).hex()
    return statement


FORMAT = 2
"""Format 2 labels every balance ({account, asset, posted, pending}); format 1 (no `format`
field) wrote them as bare [account, asset, posted, pending] arrays and is still checked."""


def statement_at(conn: Any, heads: dict[str, int]) -> dict[str, Any]:
    balances = balances_at(conn, heads)
    trial: dict[str, int] = {}
    for line in balances:
        trial[line["asset"]] = trial.get(line["asset"], 0) + line["posted"]
    return {
        "kind": "membership-ledger checkpoint",
        "format": FORMAT,
        "taken_at": datetime.now(UTC).isoformat(),
        "about": {
            "heads": "per log: the last event's position and its link in the hash chain",
            "trial_balance": "posted amounts summed per asset: zero when every movement balances",
            "balances": "per account and asset at the heads: posted, and pending (held); "
            "amounts in minor units (fen) or units of stock",
        },
        "heads": {
            name: {"notification_id": nid, "hash": chain_hash(conn, name, nid)}
            for name, nid in heads.items()
        },
        "trial_balance": dict(sorted(trial.items())),
        "balances": balances,
    }


def summary(statement: dict[str, Any]) -> str:
    """One line a person reads: when, up to which events, how many balances, the trial
    balance."""
    heads = ", ".join(
        f"{name} at event {head['notification_id']}" for name, head in statement["heads"].items()
    )
    trial = statement["trial_balance"]
    if all(total == 0 for total in trial.values()):
        balanced = f"trial balance zero in all {len(trial)} assets"
    else:
        balanced = "trial balance NOT zero: " + ", ".join(
            f"{asset} {total}" for asset, total in trial.items() if total
        )
    return (
        f"checkpoint of {statement['taken_at']}: {heads}; "
        f"{len(statement['balances'])} account balances; {balanced}"
    )


def chain_hash(conn: Any, application_name: str, notification_id: int) -> str | None:
    if notification_id == 0:
        return None
    row = conn.execute(
        SQL("SELECT hash FROM {} WHERE notification_id = %s").format(
            Identifier(f"{application_name}_events_chain")
        ),
        (notification_id,),
    ).fetchone()
    return bytes(row[0]).hex() if row else None


def balances_at(conn: Any, heads: dict[str, int]) -> list[dict[str, Any]]:
    """{account, asset, posted, pending} from the journal lines up to the heads, by account."""
    rows = conn.execute(
        "SELECT account, asset, coalesce(sum(amount) FILTER (WHERE kind = 'posted'), 0)::bigint, "
        "coalesce(sum(amount) FILTER (WHERE kind = 'pending'), 0)::bigint FROM journal_lines "
        "WHERE notification_id <= coalesce((%s::jsonb ->> application)::bigint, 0) "
        "GROUP BY account, asset ORDER BY account, asset",
        (json.dumps(heads),),
    ).fetchall()
    return [
        {"account": account, "asset": asset, "posted": posted, "pending": pending}
        for account, asset, posted, pending in rows
    ]


def as_recorded(balances: list[dict[str, Any]], statement: dict[str, Any]) -> list[Any]:
    """Balances in the statement's own format (format 1: bare arrays)."""
    if statement.get("format", 1) >= 2:
        return balances
    return [[b["account"], b["asset"], b["posted"], b["pending"]] for b in balances]


def check(database_url: str, statement: dict[str, Any], secret: bytes | None = None) -> list[str]:
    """Problems found (none: the checkpoint holds). The signature is checked with the key in
    the file, and with this installation's key when `secret` is given."""
    problems = []
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(statement["public_key"]))
    try:
        public.verify(bytes.fromhex(statement["signature"]), canonical(statement))
    except InvalidSignature:
        return ["the signature does not match the statement: the file was changed"]
    if secret is not None and public_key_hex(signing_key(secret)) != statement["public_key"]:
        problems.append("the file was signed by another key than this installation's")
    with psycopg.connect(database_url, autocommit=True) as conn:
        heads = {}
        for name, recorded in statement["heads"].items():
            heads[name] = recorded["notification_id"]
            found = chain_up_to(conn, name, recorded["notification_id"])
            if found != recorded["hash"]:
                problems.append(
                    f"{name}: the chain no longer leads to the checkpoint's head "
                    f"{recorded['notification_id']} (expected {recorded['hash']}, found {found})"
                )
        if as_recorded(balances_at(conn, heads), statement) != statement["balances"]:
            problems.append("the journal no longer gives the checkpoint's balances at its heads")
    return problems


def chain_up_to(conn: Any, application_name: str, notification_id: int) -> str | None:
    """Recompute the chain from the first event to `notification_id`; the last link, or a
    note of the first break."""
    previous, last = GENESIS, None
    for row in read_chained(conn, application_name):
        if row.notification_id > notification_id:
            break
        if row.event is None or row.link is None:
            return f"broken at {row.notification_id}"
        previous = link(
            previous,
            row.notification_id,
            row.event.originator_id,
            row.event.originator_version,
            row.event.topic,
            row.event.state,
        )
        if previous != row.link:
            return f"broken at {row.notification_id}"
        last = previous.hex()
    return last
