"""A merchant settlement as the API shows it: its statement as JSON, or as CSV (one row per
consumption and refund, then what was carried in and the total per currency)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from pydantic import Field, StrictBool, StringConstraints

from api.schemas import Body
from ledger.cards.merchant_settlement import MerchantSettlement, StatementLine, payout_id

Period = Annotated[
    str, StringConstraints(min_length=1, max_length=32), Field(description="YYYY-MM-DD")
]


class MerchantSettlementIn(Body):
    merchant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    period: Period = Field(
        description="a day in the merchant's time zone, closed (ended there) unless close_now"
    )
    close_now: StrictBool = Field(
        False, description="sandbox mode only: settle today as if it had ended now"
    )


def money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def line_view(line: StatementLine) -> dict[str, Any]:
    return {
        "id": str(line.id),
        "consumption_id": str(line.consumption_id),
        "at": line.at.isoformat(),
        "amount": money(line.amount.amount, line.amount.currency),
    }


def settlement_view(settlement: MerchantSettlement) -> dict[str, Any]:
    lines = settlement.lines
    totals = settlement.totals
    return {
        "id": str(settlement.id),
        "merchant_id": str(settlement.merchant_id),
        "period": settlement.period,
        "timezone": settlement.timezone,
        "cutoff": settlement.cutoff.isoformat(),
        "status": settlement.status,
        "consumptions": [line_view(line) for line in lines if line.kind == "consumption"],
        "refunds": [line_view(line) for line in lines if line.kind == "refund"],
        "totals": [
            {
                "currency": currency,
                "consumptions": total.consumptions,
                "refunds": total.refunds,
                "carried_in": total.carried_in,
                "amount": total.amount,
                "carried_forward": total.carried_forward,
            }
            for currency, total in totals.items()
        ],
        "payouts": [
            {
                "id": str(payout_id(settlement.id, currency)),
                "amount": money(payout["amount"], currency),
                "status": payout["status"],
                "reference": payout["reference"] or None,
                "failure": payout["failure"] or None,
            }
            for currency, payout in sorted(settlement.payouts.items())
        ],
    }


CSV_HEADER = ["kind", "id", "consumption_id", "at", "currency", "amount"]


def settlement_csv(settlement: MerchantSettlement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for line in settlement.lines:
        writer.writerow(
            [
                line.kind,
                line.id,
                line.consumption_id,
                line.at.isoformat(),
                line.amount.currency,
                line.amount.amount,
            ]
        )
    for currency, total in settlement.totals.items():
        if total.carried_in:
            writer.writerow(["carried_in", "", "", "", currency, total.carried_in])
        writer.writerow(["total", "", "", settlement.period, currency, total.amount])
    return out.getvalue()
