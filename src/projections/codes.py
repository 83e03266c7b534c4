"""Codes: one row per issued code (never the code itself), for batch listings and the
sweeper that expires codes past their date."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from psycopg.sql import SQL, Identifier

from ledger.distribution.codes import Code, CodeBatch

STATUS_AFTER = {
    Code.Reserved: "reserved",
    Code.Released: "issued",
    Code.Redeemed: "redeemed",
    Code.Voided: "voided",
    Code.Expired: "expired",
}


class CodesView(PostgresTrackingRecorder):
    table = "codes_v1"

    def issue(self, batch: Any, tracking: Tracking) -> None:
        statement = SQL(
            "INSERT INTO {t} (code_id, batch_id, channel_id, product_id, status, active, "
            "expires_at, issued_at, updated_at) VALUES (%s, %s, %s, %s, 'issued', %s, %s, %s, %s)"
        ).format(t=Identifier(self.table))
        rows = [
            (code_id, batch.originator_id, batch.channel_id, batch.product_id,
             not batch.inactive, batch.expires_at, batch.timestamp, batch.timestamp)
            for code_id in batch.code_ids
        ]
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(statement, rows)
            self._insert_tracking(curs, tracking)

    def update(self, code_id: Any, changes: dict[str, Any], at: Any, tracking: Tracking) -> None:
        assignments = SQL(", ").join(
            SQL("{} = %s").format(Identifier(column)) for column in changes
        )
        statement = SQL("UPDATE {t} SET {a}, updated_at = %s WHERE code_id = %s").format(
            t=Identifier(self.table), a=assignments
        )
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(statement, (*changes.values(), at, code_id))
            self._insert_tracking(curs, tracking)


class CodesProjection(Projection[CodesView]):
    name = "codes_v1"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        e = domain_event
        if isinstance(e, CodeBatch.Issued):
            self.view.issue(e, tracking)
        elif type(e) in STATUS_AFTER:
            status = STATUS_AFTER[type(e)]
            self.view.update(e.originator_id, {"status": status}, e.timestamp, tracking)
        elif isinstance(e, Code.Activated):
            self.view.update(e.originator_id, {"active": True}, e.timestamp, tracking)
        else:
            self.view.insert_tracking(tracking)


class CodesReader:
    def __init__(self, pool: Any, table: str = CodesView.table) -> None:
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
