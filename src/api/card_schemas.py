"""Request and response bodies of the member-card API: strict types, no unknown fields."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from api.input_rules import Expiry
from api.schemas import Body, MoneyIn, MoneyOut, Name
from ledger.cards.application import MAX_USES
from ledger.cards.splits import BASIS_POINTS, MAX_SHARED_CAP_BP

Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Discount = Annotated[StrictInt, Field(ge=1, le=BASIS_POINTS, description="basis points paid")]
Commission = Annotated[StrictInt, Field(ge=0, le=BASIS_POINTS - 1)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 \-]{5,24}$")]


class MerchantIn(Body):
    name: Name
    timezone: TimeZone = Field(description="IANA time zone, e.g. Asia/Shanghai")


class MerchantCreated(BaseModel):
    id: str
    key_id: str
    key_secret: str


class MemberIn(Body):
    name: Name
    phone: Phone


class MemberCreated(BaseModel):
    id: str
    token: str


class ActivityIn(Body):
    pay: MoneyIn
    bonus: MoneyIn | None = None
    discount_bp: Discount
    shared_cap_bp: Annotated[StrictInt, Field(ge=1, le=MAX_SHARED_CAP_BP)] | None = Field(
        default=None, description="cap on prices consumed with a card's shared cards, bp of pay"
    )


class CardIn(Body):
    activity_id: Id


class Recipient(Body):
    """Exactly one of: a member to send the card to, or `publish: true`."""

    to_member_id: Id | None = None
    publish: StrictBool = False

    @model_validator(mode="after")
    def one_recipient(self) -> Recipient:
        if (self.to_member_id is None) == (not self.publish):
            raise ValueError("give either to_member_id or publish: true")
        return self


class SharedCardIn(Recipient):
    discount_bp: Discount
    commission_bp: Commission
    expires_at: Expiry | None = None
    cap: MoneyIn | None = None
    max_uses: Annotated[StrictInt, Field(ge=1, le=MAX_USES)] | None = None


class PassIn(Recipient):
    pass


class IntimateCardIn(Body):
    holder_member_id: Id
    monthly_limit: MoneyIn
    per_use_limit: MoneyIn | None = None
    total_limit: MoneyIn | None = None
    show_details: StrictBool


class ConsumptionIn(Body):
    card_id: Id
    price: MoneyIn


class WithdrawalIn(Body):
    amount: MoneyIn


class SplitOut(BaseModel):
    party: str
    account: str
    amount: int


class ConsumptionOut(BaseModel):
    id: str
    card_id: str
    card_kind: str
    price: MoneyOut
    consumer_pays: MoneyOut
    card_debited: MoneyOut
    splits: list[SplitOut]
    refunded: bool
    recorded_at: str


class CardOut(BaseModel):
    id: str
    balance: MoneyOut
    discount_bp: int


class WithdrawalOut(BaseModel):
    id: str
    status: str
    amount: MoneyOut
    failure: str | None = None
