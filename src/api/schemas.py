"""Request and response bodies: strict types, so a string is never taken for a number."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from api.input_rules import (
    Expiry,
    refuse_control_characters,
    refuse_control_characters_within,
)
from ledger.money import MAX_AMOUNT, MAX_QUANTITY, Money

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(refuse_control_characters),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Url = Annotated[AnyHttpUrl, Field(max_length=2000)]


class Body(BaseModel):
    """Every request body: no unknown fields, no string past 2000 characters, and no control
    character in any string of any field (api/input_rules.py says which)."""

    model_config = ConfigDict(extra="forbid", str_max_length=2000)

    @field_validator("*", mode="after")
    @classmethod
    def plain_text(cls, value: Any) -> Any:
        return refuse_control_characters_within(value)


MONEY_SHAPE = 'money is an object in minor units (fen): {"amount": 300, "currency": "CNY"}'


class MoneyIn(Body):
    amount: Annotated[StrictInt, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
    currency: Currency = "CNY"

    @model_validator(mode="before")
    @classmethod
    def an_object(cls, value: Any) -> Any:
        """A bare number is the usual first mistake: say what the shape is."""
        if not isinstance(value, dict):
            raise ValueError(MONEY_SHAPE)
        return value

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
    next_cursor: str | None = None


class StockPurchaseOut(BaseModel):
    id: str
    product_id: str
    quantity: int
    unit_price: MoneyOut
    total: MoneyOut
    stock: StockPosition


TypedCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Account = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9@._+\-]{3,64}$")
]
ChannelRef = Annotated[str, Field(max_length=64)]


class CodeBatchIn(Body):
    product_id: Annotated[str, Field(max_length=64)]
    quantity: Annotated[StrictInt, Field(ge=1, le=1000)]
    expires_at: Expiry | None = None
    inactive: StrictBool = False


class CodesIn(Body):
    codes: Annotated[list[TypedCode], Field(min_length=1, max_length=1000)]


class CodeVoidIn(Body):
    codes: Annotated[list[TypedCode], Field(min_length=1, max_length=1000)] | None = None
    batch_id: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def one_of(self) -> CodeVoidIn:
        if (self.codes is None) == (self.batch_id is None):
            raise ValueError("give either codes or batch_id")
        return self


class VerificationIn(Body):
    account: Account
    channel_id: ChannelRef | None = None


def an_ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, in its canonical form (so one address is one limit)."""
    return str(ip_address(text))


IpAddress = Annotated[str, StringConstraints(max_length=45), AfterValidator(an_ip_address)]


class EndUserIn(Body):
    """The end user a channel's server recharges for: `ip` is whom the per-address limits and
    the lock-out apply to; `name` is kept with the recharge for display."""

    ip: IpAddress | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None


class RechargeIn(Body):
    code: TypedCode
    account: Account
    verification_code: Annotated[str, StringConstraints(min_length=1, max_length=12)]
    user: EndUserIn | None = None
    channel_id: ChannelRef | None = None


class ResolutionIn(Body):
    outcome: Literal["succeeded", "failed"]
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class RefundRequestIn(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class RechargeOut(BaseModel):
    id: str
    status: str
    product_id: str
    account: str
    channel_id: str
    failure: str | None = None
    membership: dict[str, Any] | None = None
    requested_at: str | None = None
    discrepancy: dict[str, Any] | None = None
    """A platform's news that contradicts the outcome (`late_success`), for an operator."""
    refund: dict[str, Any] | None = None
    """The latest refund: `{id, refund_no, status, reason, requested_at, decided_at,
    rejection}` (`rejection`: why the platform rejected it)."""
