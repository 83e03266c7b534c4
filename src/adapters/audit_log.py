"""The audit log: refusals and decisions that are not events, append-only in PostgreSQL.

Accounts are masked before they are written; nothing here ever receives a redemption code, a
verification code, a token or a secret (the writers pass codes, ids and masked values only).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TextIO
from uuid import UUID

KINDS = (
    "refusal",
    "recharge_refused",
    "verification_failed",
    "lockout",
    "signature_invalid",
    "unauthorized",
    "callback_refused",
    "token_use",
    "key_use",
    "batch_export",
)
"""`refusal` is any other refused request; `callback_refused` is for platform callbacks;
`token_use` and `key_use` record who used which token or key for what; `batch_export` a
channel's one export of an inactive batch's codes."""

MAX_PAGE = 100
EXPORT_BATCH = 1000
MAX_DETAIL = 500
MAX_FIELD = 300


def mask_account(account: str) -> str:
    """`13812348000` → `138****8000`: enough to tell accounts apart, not to reach one."""
    if len(account) >= 8:
        return f"{account[:3]}****{account[-4:]}"
    if len(account) >= 3:
        return f"{account[0]}{'*' * (len(account) - 2)}{account[-1]}"
    return "*" * len(account)


def clean(value: str | None, limit: int = MAX_FIELD) -> str | None:
    """Request-borne text is cut to a bound and freed of NUL, which PostgreSQL's text refuses
    (a refusal must never fail to be written because of what it refused)."""
    return value.replace("\x00", "")[:limit] if value is not None else None


@dataclass(frozen=True)
class AuditLine:
    """One line to write. `account` is given in clear and stored masked."""

    kind: str
    code: str | None = None
    principal: str | None = None
    channel_id: UUID | None = None
    account: str | None = None
    address: str | None = None
    request_id: str | None = None
    method: str | None = None
    path: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """One line as read back (`account` already masked)."""

    id: int
    at: datetime
    kind: str
    code: str | None
    principal: str | None
    channel_id: UUID | None
    account: str | None
    address: str | None
    request_id: str | None
    method: str | None
    path: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["id"] = str(self.id)
        row["at"] = self.at.isoformat()
        row["channel_id"] = str(self.channel_id) if self.channel_id else None
        return row


COLUMNS = [f.name for f in fields(AuditEntry)]


@dataclass(frozen=True)
class AuditFilter:
    kind: str | None = None
    channel_id: UUID | None = None
    code: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        equal = (("kind", self.kind), ("channel_id", self.channel_id), ("code", self.code))
        for column, value in equal:
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if self.since is not None:
            clauses.append("at >= %s")
            params.append(self.since)
        if self.until is not None:
            clauses.append("at < %s")
            params.append(self.until)
        return " AND ".join(clauses), params


class AuditLog:
    """Writer, reader, pruner and CSV export of the `audit_log` table."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def write(self, line: AuditLine, at: datetime | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO audit_log (at, kind, code, principal, channel_id, account, address, "
                "request_id, method, path, detail) "
                "VALUES (COALESCE(%s, now()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    at,
                    line.kind,
                    clean(line.code),
                    clean(line.principal),
                    line.channel_id,
                    clean(mask_account(line.account) if line.account else None),
                    clean(line.address),
                    clean(line.request_id),
                    clean(line.method),
                    clean(line.path),
                    clean(line.detail, MAX_DETAIL) or "",
                ),
            )

    def page(
        self, where: AuditFilter, limit: int = 50, after: int | None = None
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first; the cursor is the last id of the page, None on the last page."""
        limit = max(1, min(limit, MAX_PAGE))
        clause, params = where.where()
        if after is not None:
            clause += " AND id < %s"
            params.append(after)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE {clause} "
                "ORDER BY id DESC LIMIT %s",
                (*params, limit + 1),
            ).fetchall()
        entries = [AuditEntry(*row) for row in rows[:limit]]
        return entries, entries[-1].id if len(rows) > limit else None

    def entries(self, where: AuditFilter) -> Iterator[AuditEntry]:
        """Every matching line, oldest first, read in batches."""
        clause, params = where.where()
        last = 0
        while True:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE {clause} AND id > %s "
                    "ORDER BY id LIMIT %s",
                    (*params, last, EXPORT_BATCH),
                ).fetchall()
            yield from (AuditEntry(*row) for row in rows)
            if len(rows) < EXPORT_BATCH:
                return
            last = rows[-1][0]

    def export_csv(self, out: TextIO, where: AuditFilter) -> int:
        """Write the matching lines as CSV with a header; how many lines were written."""
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        count = 0
        for entry in self.entries(where):
            row = entry.as_dict()
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
            count += 1
        return count

    def prune(self, retention_days: int) -> int:
        """Delete the lines older than the retention; the only deletion the table allows."""
        with self.pool.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM audit_log WHERE at < now() - make_interval(days => %s)",
                (retention_days,),
            )
            return int(deleted.rowcount)
