"""Platforms, products, the channel tree, funds, prices and stock purchases."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from adapters.outbound import OutboundAddresses
from adapters.signing import key_secret, webhook_secret
from api.auth import authenticate, require
from api.container import Services, get_services
from api.idempotency import IdempotentCall, idempotent
from api.input_rules import canonical_uuid
from api.keyed_route import KeyedRoute
from api.presenters import (
    balance,
    channel_created,
    channel_view,
    stock_page,
    stock_positions,
    stock_purchased,
)
from api.principals import Principal
from api.problems import Problem
from api.schemas import (
    Balance,
    ChannelCreated,
    ChannelIn,
    Created,
    Currency,
    DepositIn,
    MoneyOut,
    PlatformIn,
    PriceIn,
    ProductIn,
    StockList,
    StockPurchaseIn,
    StockPurchaseOut,
    WebhookIn,
)
from ledger import accounts
from ledger.distribution.application import Distribution
from ledger.distribution.channel import Channel
from ledger.errors import NotFound

router = APIRouter(route_class=KeyedRoute, prefix="/v1", tags=["distribution"])


def parse_id(value: str, what: str) -> UUID:
    """An id in its one canonical spelling (lowercase, hyphenated); any other finds nothing."""
    found = canonical_uuid(value)
    if found is None:
        raise NotFound(f"{what} {value!r} not found")
    return found


def parse_cursor(after: str | None) -> UUID | None:
    """A page's cursor is the last id of the page before; anything else is bad input."""
    if after is None:
        return None
    found = canonical_uuid(after)
    if found is None:
        raise Problem("validation_failed", "after is not a cursor of this list", status=422)
    return found


def visible_channel(distribution: Distribution, principal: Principal, channel_id: str) -> Channel:
    """A channel sees its own subtree only; anything else does not exist for it."""
    channel = distribution.channel(parse_id(channel_id, "channel"))
    if principal.role == "channel":
        assert principal.channel_id is not None
        if not channel.is_within(principal.channel_id):
            raise NotFound(f"channel {channel_id} not found")
    return channel


def registered(services: Services, channel: Channel) -> tuple[int, dict[str, Any]]:
    """A new channel's key, with its secret derived again (the secret is stored nowhere)."""
    return 201, channel_created(channel, key_secret(services.settings.secret_bytes, channel.key_id))


@router.post("/platforms", status_code=201, response_model=Created)
def register_platform(
    body: PlatformIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")
    return call.run(
        lambda command_id: (
            201,
            {
                "id": str(
                    services.distribution.register_platform(
                        command_id, body.name, str(body.gateway_url)
                    ).id
                )
            },
        )
    )


@router.post("/products", status_code=201, response_model=Created)
def register_product(
    body: ProductIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")
    platform_id = parse_id(body.platform_id, "platform")

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        product = services.distribution.register_product(
            command_id,
            platform_id,
            body.name,
            body.duration_days,
            body.face_value.to_money(),
            body.wholesale_cost.to_money(),
        )
        return 201, {"id": str(product.id)}

    return call.run(command)


@router.post("/channels", status_code=201, response_model=ChannelCreated)
def register_channel(
    body: ChannelIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")
    return call.run(
        lambda command_id: registered(
            services, services.distribution.register_channel(command_id, body.name)
        ),
        sealed=True,
    )


@router.post("/channels/{channel_id}/subchannels", status_code=201, response_model=ChannelCreated)
def register_subchannel(
    channel_id: str,
    body: ChannelIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "channel")
    parent = visible_channel(services.distribution, call.principal, channel_id)
    return call.run(
        lambda command_id: registered(
            services, services.distribution.register_channel(command_id, body.name, parent.id)
        ),
        sealed=True,
    )


@router.post("/channels/{channel_id}/deposits", status_code=201)
def deposit(
    channel_id: str,
    body: DepositIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "operator")
    target = parse_id(channel_id, "channel")
    amount = body.amount.to_money()

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        channel = services.distribution.deposit(command_id, target, amount)
        funds = MoneyOut(amount=channel.funds_in(amount.currency), currency=amount.currency)
        return 201, {"id": str(command_id), "funds": funds.model_dump()}

    return call.run(command)


@router.put("/channels/{channel_id}/prices/{product_id}")
def set_price(
    channel_id: str,
    product_id: str,
    body: PriceIn,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "channel")
    channel = visible_channel(services.distribution, principal, channel_id)
    if channel.id != principal.channel_id:
        raise Problem("forbidden", "a channel sets only its own prices, for its children")
    product = parse_id(product_id, "product")
    services.distribution.set_price(channel.id, product, body.price.to_money())
    return {"product_id": str(product), "price": body.price.to_money().as_dict()}


@router.post("/channels/{channel_id}/suspension", status_code=200)
def suspend(
    channel_id: str,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    channel = _suspendable(services.distribution, call.principal, channel_id)
    return call.run(lambda _: (200, channel_view(services.distribution.suspend(channel.id))))


@router.delete("/channels/{channel_id}/suspension", status_code=200)
def resume(
    channel_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    channel = _suspendable(services.distribution, principal, channel_id)
    return channel_view(services.distribution.resume(channel.id))


def _suspendable(distribution: Distribution, principal: Principal, channel_id: str) -> Channel:
    """The operator, or a channel above this one, may suspend or resume it."""
    require(principal, "operator", "channel")
    channel = visible_channel(distribution, principal, channel_id)
    if principal.role == "channel" and channel.id == principal.channel_id:
        raise Problem("forbidden", "a channel is suspended by its parent or the operator")
    return channel


@router.put("/channels/{channel_id}/webhook")
def set_webhook(
    channel_id: str,
    body: WebhookIn,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "channel")
    channel = visible_channel(services.distribution, principal, channel_id)
    if channel.id != principal.channel_id:
        raise Problem("forbidden", "a channel sets only its own webhook")
    OutboundAddresses(services.settings.outbound_allow_private).check_url(str(body.url))
    services.distribution.set_webhook(channel.id, str(body.url))
    return {
        "url": str(body.url),
        "secret": webhook_secret(services.settings.secret_bytes, channel.id),
    }


@router.get("/channels/{channel_id}")
def get_channel(
    channel_id: str,
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator", "finance", "channel")
    return channel_view(visible_channel(services.distribution, principal, channel_id))


@router.post("/stock-purchases", status_code=201, response_model=StockPurchaseOut)
def purchase_stock(
    body: StockPurchaseIn,
    call: IdempotentCall = Depends(idempotent),
    services: Services = Depends(get_services),
) -> Any:
    require(call.principal, "channel")
    assert call.principal.channel_id is not None
    buyer_id = call.principal.channel_id
    product_id = parse_id(body.product_id, "product")

    def command(command_id: UUID) -> tuple[int, dict[str, Any]]:
        purchase, buyer = services.distribution.purchase_stock(
            command_id, buyer_id, product_id, body.quantity
        )
        return 201, stock_purchased(purchase, buyer, product_id)

    return call.run(command)


@router.get("/channels/{channel_id}/stock", response_model=StockList)
def stock(
    channel_id: str,
    limit: int = Query(50, ge=1, le=100),
    after: str | None = Query(None, max_length=64),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    """Stock per product, by product id; the cursor is the last product id of a page."""
    require(principal, "operator", "finance", "channel")
    cursor = parse_cursor(after)
    channel = visible_channel(services.distribution, principal, channel_id)
    services.views.catch_up()
    balances = services.views.balances.of_accounts_under(f"channel:{channel.id}:")
    positions = stock_positions(balances)
    return stock_page(positions, limit, cursor)


@router.get("/channels/{channel_id}/funds", response_model=Balance)
def funds(
    channel_id: str,
    currency: Currency = Query("CNY"),
    principal: Principal = Depends(authenticate),
    services: Services = Depends(get_services),
) -> Any:
    require(principal, "operator", "finance", "channel")
    channel = visible_channel(services.distribution, principal, channel_id)
    services.views.catch_up()
    funds = services.views.balances.of_account(accounts.channel_funds(channel.id))
    return balance(*funds.get(currency, (0, 0)), currency)
