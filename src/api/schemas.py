"""Request and response bodies: strict types, so a string is never taken for a number."""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from ledger.money import MAX_AMOUNT, MAX_QUANTITY, Money

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Url = Annotated[AnyHttpUrl, Field(max_length=2000)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=2000)


class MoneyIn(Body):
    amount: Annotated[StrictInt, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
    currency: Currency = "CNY"

    def to_money(self) -> Money:
        return Money(self.amount, self.currency)


class MoneyOut(BaseModel):
    amount: int
    currency: str

    @classmethod
    def of(cls, money: Money) -> MoneyOut:
        return cls(amount=money.amount, currency=money.currency)


class PlatformIn(Body):
    name: Name
    gateway_url: Url


class ProductIn(Body):
    platform_id: Annotated[str, Field(max_length=64)]
    name: Name
    duration_days: Annotated[StrictInt, Field(ge=1, le=3660)]
    face_value: MoneyIn
    wholesale_cost: MoneyIn


class ChannelIn(Body):
    name: Name


class DepositIn(Body):
    amount: MoneyIn


class PriceIn(Body):
    price: MoneyIn


class WebhookIn(Body):
    url: Url


class StockPurchaseIn(Body):
    product_id: Annotated[str, Field(max_length=64)]
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]


class Created(BaseModel):
    id: str


class ChannelCreated(BaseModel):
    id: str
    key_id: str
    key_secret: str


class Balance(BaseModel):
    posted: MoneyOut
    pending: MoneyOut
    available: MoneyOut


class StockPosition(BaseModel):
    product_id: str
    on_hand: int
    held: int
    consumed: int


class StockList(BaseModel):
    items: list[StockPosition]


class StockPurchaseOut(BaseModel):
    id: str
    product_id: str
    quantity: int
    unit_price: MoneyOut
    total: MoneyOut
    stock: StockPosition
