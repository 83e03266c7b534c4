"""Platform settlements and cases over HTTP: request bodies and how a settlement, its lines
and a case are shown."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StringConstraints

from api.problems import Problem
from api.schemas import Body
from ledger.settlement.cases import Case
from ledger.settlement.saga import Settlement

PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SettlementIn(Body):
    platform_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    period: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="YYYY-MM-DD, a UTC day that has ended (unless close_now)"
    )
    close_now: StrictBool = Field(
        False, description="sandbox mode only: settle the current day as if it had ended"
    )


class CaseResolutionIn(Body):
    outcome: Literal["accept_theirs", "keep_ours", "request_refund", "write_off"]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""


def parse_period(value: str) -> date:
    """A period is a calendar day written YYYY-MM-DD; anything else is bad input."""
    try:
        if PERIOD.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise Problem(
        "validation_failed", f"period {value!r} is not a day written YYYY-MM-DD", status=422
    )


def money(amount: int | None, currency: str) -> dict[str, Any] | None:
    return None if amount is None else {"amount": amount, "currency": currency}


def settlement_view(settlement: Settlement) -> dict[str, Any]:
    s, currency = settlement, settlement.currency
    counts = {
        m: s.counts.get(m, 0) for m in ("matched", "amount_differs", "ours_only", "theirs_only")
    }
    return {
        "id": str(s.id),
        "platform_id": str(s.platform_id),
        "period": s.period.isoformat(),
        "status": s.status,
        "waiting_for": s.waiting_for,
        "due_at": s.due_at.isoformat() if s.due_at else None,
        "owed": money(s.owed, currency),
        "statement": money(s.statement, currency),
        "agreed": money(s.agreed, currency),
        "paid": money(s.paid, currency),
        "credit": money(s.credit, currency),
        "counts": counts,
        "lines": s.results,
        "carried_in": s.carried_in_count,
        "carried_out": s.carried_out_count,
        "cases": s.cases,
        "open_cases": s.open_cases,
        "approved_by": s.approved_by,
        "payment_reference": s.reference,
        "opened_at": s.opened_at.isoformat(),
    }


def line_view(currency: str, row: list[Any]) -> dict[str, Any]:
    """A results row [order_no, kind, ours, theirs, match, disposition]; a side the line is
    missing from is left out."""
    order_no, kind, ours, theirs, match, disposition = row
    shown: dict[str, Any] = {"order_no": order_no, "kind": kind}
    if ours is not None:
        shown["ours"] = money(ours, currency)
    if theirs is not None:
        shown["theirs"] = money(theirs, currency)
    shown |= {"match": match, "disposition": disposition}
    return shown


def case_view(case: Case) -> dict[str, Any]:
    resolution = None
    if case.resolution is not None:
        r = case.resolution
        resolution = {
            "outcome": r["outcome"],
            "note": r["note"],
            "by": r["by"],
            "at": r["at"].isoformat(),
            "pay": money(r["pay"], case.currency),
        }
    return {
        "id": str(case.id),
        "kind": case.kind,
        "status": case.status,
        "platform_id": str(case.platform_id),
        "settlement_id": str(case.settlement_id) if case.settlement_id else None,
        "period": case.period.isoformat() if case.period else None,
        "order_no": case.order_no,
        "line_kind": case.line_kind,
        "ours": money(case.ours, case.currency),
        "theirs": money(case.theirs, case.currency),
        "detail": case.detail,
        "opened_at": case.opened_at.isoformat(),
        "resolution": resolution,
    }
