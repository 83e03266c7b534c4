"""What the distribution, recharge and ledger routes answer: domain objects and view rows
shaped into the bodies of API.md (the member cards' are in card_presenters.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from api.schemas import (
    Balance,
    ChannelCreated,
    MoneyOut,
    RechargeOut,
    StockList,
    StockPosition,
    StockPurchaseOut,
)
from ledger.distribution.channel import Channel
from ledger.distribution.codes import CodeBatch
from ledger.distribution.movements import StockPurchase
from ledger.recharges.saga import Recharge

View = dict[str, Any]
STOCK_COLUMNS = {"stock": "on_hand", "held": "held", "consumed": "consumed"}


def balance(posted: int, pending: int, currency: str) -> Balance:
    return Balance(
        posted=MoneyOut(amount=posted, currency=currency),
        pending=MoneyOut(amount=pending, currency=currency),
        available=MoneyOut(amount=posted - pending, currency=currency),
    )


def channel_created(channel: Channel, key_secret: str) -> View:
    return ChannelCreated(
        id=str(channel.id), key_id=channel.key_id, key_secret=key_secret
    ).model_dump()


def channel_view(channel: Channel) -> View:
    return {
        "id": str(channel.id),
        "name": channel.name,
        "parent_id": str(channel.parent_id) if channel.parent_id else None,
        "suspended": channel.suspended,
        "prices": [
            {"product_id": product_id, "price": price.as_dict()}
            for product_id, price in sorted(channel.prices.items())
        ],
    }


def stock_purchased(purchase: StockPurchase, buyer: Channel, product_id: UUID) -> View:
    on_hand = buyer.stock_of(product_id)
    return StockPurchaseOut(
        id=str(purchase.id),
        product_id=str(product_id),
        quantity=purchase.quantity,
        unit_price=MoneyOut.of(purchase.unit_price),
        total=MoneyOut.of(purchase.total),
        stock=StockPosition(product_id=str(product_id), on_hand=on_hand, held=0, consumed=0),
    ).model_dump()


def stock_positions(balances: dict[tuple[str, str], tuple[int, int]]) -> StockList:
    """A channel's balances (`channel:<id>:<purpose>[:<product>]`) as stock per product."""
    positions: dict[str, dict[str, int]] = {}
    for (account, _asset), (posted, _pending) in balances.items():
        _, _, purpose, *rest = account.split(":")
        if purpose in STOCK_COLUMNS and rest:
            row = positions.setdefault(rest[0], dict.fromkeys(STOCK_COLUMNS.values(), 0))
            row[STOCK_COLUMNS[purpose]] = posted
    return StockList(items=[StockPosition(product_id=p, **c) for p, c in sorted(positions.items())])


def code_batch_issued(batch: CodeBatch, codes: list[str]) -> View:
    return {
        "id": str(batch.id),
        "product_id": str(batch.product_id),
        "quantity": len(codes),
        "expires_at": batch.expires_at.isoformat() if batch.expires_at else None,
        "inactive": batch.inactive,
        "codes": codes,
    }


def recharge_out(recharge: Recharge) -> RechargeOut:
    membership = None
    if recharge.membership:
        membership = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in recharge.membership.items()
        }
    discrepancy = None
    if recharge.discrepancy:
        discrepancy = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in recharge.discrepancy.items()
        }
    return RechargeOut(
        id=str(recharge.id),
        status=recharge.status,
        product_id=str(recharge.product_id),
        account=recharge.account,
        channel_id=str(recharge.channel_id),
        failure=recharge.failure or recharge.review_reason,
        membership=membership,
        requested_at=recharge.requested_at.isoformat(),
        discrepancy=discrepancy,
        refund=refund_out(recharge.refund),
    )


def refund_out(refund: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recharge's latest refund as GET /v1/recharges/{id} shows it."""
    if refund is None:
        return None
    shown = ("id", "refund_no", "status", "reason", "requested_at", "decided_at", "rejection")
    return {
        k: refund[k].isoformat() if isinstance(refund[k], datetime) else refund[k] for k in shown
    }


def journal_page(rows: list[dict[str, Any]], limit: int) -> View:
    """Entries of the journal view, `limit` of them; one more row means there is a next page."""
    items = [journal_entry(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = f"{items[-1]['application']}:{items[-1]['position']}"
    return {"items": items, "next_cursor": next_cursor}


def journal_entry(row: dict[str, Any]) -> View:
    return {
        "application": row["application"],
        "position": row["notification_id"],
        "event_id": f"{row['originator_id']}:{row['originator_version']}",
        "topic": row["topic"],
        "recorded_at": row["recorded_at"].isoformat(),
        "postings": [{"account": a, "asset": k, "amount": n} for a, k, n in row["postings"]],
        "holds": [{"account": a, "asset": k, "amount": n} for a, k, n in row["holds"]],
        "chain_hash": row["chain_hash"],
    }


def row_out(row: dict[str, Any]) -> View:
    """A view row as JSON: ids and text as strings, times in ISO 8601, integers as they are."""
    out: View = {}
    for key, value in row.items():
        if value is None or isinstance(value, bool | int):
            out[key] = value
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = str(value)
    return out


def page_of(items: list[View], limit: int, key: str = "id") -> View:
    """`limit` items; one more row fetched means there is a next page after the last one."""
    shown = items[:limit]
    next_cursor = str(shown[-1][key]) if len(items) > limit else None
    return {"items": shown, "next_cursor": next_cursor}


def recharges_page(rows: list[dict[str, Any]], limit: int) -> View:
    return page_of([row_out(row) for row in rows], limit)


def batch_row(row: dict[str, Any]) -> View:
    """A code batch of the directory with its codes counted by state."""
    states = ("issued", "reserved", "redeemed", "voided", "expired")
    shown = row_out({k: v for k, v in row.items() if k not in states})
    shown["codes"] = {state: int(row[state]) for state in states}
    return shown


def stock_page(stock: StockList, limit: int, after: UUID | None) -> StockList:
    """One page of a channel's stock, ordered by product id, after the product `after`."""
    rest = [p for p in stock.items if after is None or p.product_id > str(after)]
    next_cursor = rest[limit - 1].product_id if len(rest) > limit else None
    return StockList(items=rest[:limit], next_cursor=next_cursor)


def standings_page(rows: list[View], limit: int, after: str | None) -> View:
    """Where the views stand, `limit` at a time; the cursor names the last row's feed."""
    keys = [f"{row['name']}:{row['application']}" for row in rows]
    start = 0
    if after is not None:
        if after not in keys:
            raise ValueError(after)
        start = keys.index(after) + 1
    shown = rows[start : start + limit]
    more = start + limit < len(rows)
    return {"items": shown, "next_cursor": keys[start + limit - 1] if more else None}


def batch_csv(batch_id: UUID, codes: list[str]) -> str:
    """A header, then one `batch_id,code` line per code."""
    return "batch_id,code\n" + "".join(f"{batch_id},{code}\n" for code in codes)
