"""Codes: one row per issued code (never the code itself), for batch listings and the
sweeper that expires codes past their date."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.distribution.codes import Code, CodeBatch
from projections.base import View

STATUS_AFTER = {
    Code.Reserved: "reserved",
    Code.Released: "issued",
    Code.Redeemed: "redeemed",
    Code.Voided: "voided",
    Code.Expired: "expired",
}


class CodesView(View):
    view_name = "codes"
    tables = ("codes",)
    keys = {"codes": "code_id"}

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        e = event
        if isinstance(e, CodeBatch.Issued):
            curs.executemany(
                self.sql(
                    "INSERT INTO {t} (code_id, batch_id, channel_id, product_id, status, active, "
                    "expires_at, issued_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, 'issued', %s, %s, %s, %s)",
                    t="codes",
                ),
                [
                    (code_id, e.originator_id, e.channel_id, e.product_id, not e.inactive,
                     e.expires_at, e.timestamp, e.timestamp)
                    for code_id in e.code_ids
                ],
            )
        elif type(e) in STATUS_AFTER:
            curs.execute(
                self.sql(
                    "UPDATE {t} SET status = %s, updated_at = %s WHERE code_id = %s", t="codes"
                ),
                (STATUS_AFTER[type(e)], e.timestamp, e.originator_id),
            )
        elif isinstance(e, Code.Activated):
            curs.execute(
                self.sql(
                    "UPDATE {t} SET active = true, updated_at = %s WHERE code_id = %s", t="codes"
                ),
                (e.timestamp, e.originator_id),
            )


class CodesReader:
    def __init__(self, pool: Any, table: str = "codes") -> None:
        self.pool = pool
        self.table = Identifier(table)

    def due_for_expiry(self, limit: int = 500) -> list[Any]:
        query = SQL(
            "SELECT code_id FROM {t} WHERE status = 'issued' AND expires_at < now() "
            "ORDER BY expires_at LIMIT %s"
        ).format(t=self.table)
        with self.pool.connection() as conn:
            return [row[0] for row in conn.execute(query, (limit,)).fetchall()]

    def batch_summary(self, batch_id: Any) -> dict[str, int]:
        query = SQL("SELECT status, count(*) FROM {t} WHERE batch_id = %s GROUP BY status")
        with self.pool.connection() as conn:
            rows = conn.execute(query.format(t=self.table), (batch_id,)).fetchall()
        return {status: count for status, count in rows}
