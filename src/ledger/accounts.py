"""Account names by party and purpose (SPEC section 4), and asset kinds.

An account's balance is what it holds: a movement takes an amount from a source account and
adds it to a destination account. Accounts of the outside world (`external:…`) and what the
operator owes (`platform:<id>:payable`) hold whatever the movements leave in them; only the
accounts a party spends from must never go negative.
"""

from uuid import UUID


def unit_asset(product_id: UUID | str) -> str:
    """Stock units of one product are an asset kind of their own."""
    return f"unit:{product_id}"


def is_unit_asset(asset: str) -> bool:
    return asset.startswith("unit:")


def channel_funds(channel_id: UUID | str) -> str:
    return f"channel:{channel_id}:funds"


def channel_stock(channel_id: UUID | str, product_id: UUID | str) -> str:
    return f"channel:{channel_id}:stock:{product_id}"


def platform_payable(platform_id: UUID | str) -> str:
    """What the operator owes the platform for stock bought at wholesale."""
    return f"platform:{platform_id}:payable"


def platform_supply(platform_id: UUID | str, product_id: UUID | str) -> str:
    """Where a platform's units come from when a top-level channel buys them."""
    return f"platform:{platform_id}:supply:{product_id}"


def external_deposits(currency: str) -> str:
    """The outside world's side of money paid in by channels (the payment adapter)."""
    return f"external:deposits:{currency}"


def channel_held(channel_id: UUID | str, product_id: UUID | str) -> str:
    """Units held by issued codes that are not yet redeemed, voided or expired."""
    return f"channel:{channel_id}:held:{product_id}"


def channel_consumed(channel_id: UUID | str, product_id: UUID | str) -> str:
    """Units whose codes were redeemed: the membership was credited at the platform."""
    return f"channel:{channel_id}:consumed:{product_id}"


def channel_breakage(channel_id: UUID | str, product_id: UUID | str) -> str:
    """Units of sold codes that expired unredeemed."""
    return f"channel:{channel_id}:breakage:{product_id}"


def operator_breakage(currency: str) -> str:
    """The operator's income from sold codes that expired unredeemed: their wholesale cost,
    which the platform never bills, leaves what the operator owes it (SPEC 3.4)."""
    return f"operator:breakage:{currency}"


def card_balance(card_id: UUID | str) -> str:
    """A main card's stored value: what the merchant owes its owner, held by the operator."""
    return f"card:{card_id}:balance"


def user_wallet(member_id: UUID | str) -> str:
    """A member's withdrawable commission from shared cards."""
    return f"user:{member_id}:wallet"


def merchant_payable(merchant_id: UUID | str) -> str:
    """What the operator owes a merchant for consumption at its tills."""
    return f"merchant:{merchant_id}:payable"


def merchant_promotions(merchant_id: UUID | str) -> str:
    """What a merchant's bonuses cost it: recharge activities' bonuses are funded from here."""
    return f"merchant:{merchant_id}:promotions"


def external_payments(currency: str) -> str:
    """The outside world's side of what members pay through the payment adapter."""
    return f"external:payments:{currency}"


def external_payouts(currency: str) -> str:
    """The outside world's side of withdrawals paid out through the payout adapter."""
    return f"external:payouts:{currency}"


def external_platform_settlements(currency: str) -> str:
    """The outside world's side of what the operator pays platforms when settling."""
    return f"external:platform_settlements:{currency}"


def operator_settlement_differences(currency: str) -> str:
    """What settling with platforms cost (or gained) the operator beyond its accruals: a
    platform paid more than we accrued for a line, or an accrual it will never bill."""
    return f"operator:settlement_differences:{currency}"
