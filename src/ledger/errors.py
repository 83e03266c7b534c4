"""Domain errors: each cause has a stable code that the API turns into a problem."""


class DomainError(Exception):
    """A command was refused by a business rule; nothing was recorded."""

    code = "domain_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code


class NotFound(DomainError):
    code = "not_found"


class InvalidAmount(DomainError):
    code = "invalid_amount"


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"


class InsufficientStock(DomainError):
    code = "insufficient_stock"


class ChannelSuspended(DomainError):
    code = "channel_suspended"


class PriceNotSet(DomainError):
    code = "price_not_set"


class NotPermitted(DomainError):
    code = "forbidden"


class AlreadyExists(DomainError):
    code = "already_exists"


class StateConflict(DomainError):
    code = "state_conflict"


class CodeMalformed(DomainError):
    """Fails its check symbol or its shape: a typo, told apart from a wrong code."""

    code = "code_malformed"


class CodeInvalid(DomainError):
    """Unknown, voided, inactive or another channel's: one answer for all, so nothing leaks."""

    code = "code_invalid"


class CodeExpired(DomainError):
    code = "code_expired"


class CodeInUse(DomainError):
    code = "code_in_use"


class CodeAlreadyRedeemed(DomainError):
    code = "code_already_redeemed"


class InvalidRatio(DomainError):
    """A discount or ratio in basis points outside its range."""

    code = "invalid_ratio"


class InvalidTimezone(DomainError):
    code = "invalid_timezone"


class InsufficientBalance(DomainError):
    """A card or wallet would go below zero."""

    code = "insufficient_balance"


class LimitExceeded(DomainError):
    """A card's limit (per use, per month, in total, uses, or the merchant's shared cap)."""

    code = "limit_exceeded"


class CardFrozen(DomainError):
    code = "card_frozen"


class CardExpired(DomainError):
    """Past its expiry, or an intimate card not accepted within 24 hours."""

    code = "card_expired"


class CardRevoked(DomainError):
    code = "card_revoked"


class CardNotAccepted(DomainError):
    code = "card_not_accepted"


class DiscountBelowMain(DomainError):
    """A shared discount better for the consumer than the owner's own (d_s < d_m)."""

    code = "discount_below_main"


class ShareDepthExceeded(DomainError):
    code = "share_depth_exceeded"


class CardNotPassable(DomainError):
    """A shared card without commission (ratio 0) cannot be passed on."""

    code = "card_not_passable"


class NotCardHolder(DomainError):
    code = "not_card_holder"


class PaymentDeclined(DomainError):
    code = "payment_declined"


class Unavailable(DomainError):
    """Something the command needs from outside is not there: no payment or payout gateway
    is configured in this deployment, for instance."""

    code = "unavailable"


class VerificationFailed(DomainError):
    """No valid verification code for the account, or a wrong one."""

    code = "verification_failed"


class VerificationLocked(DomainError):
    """Too many wrong tries at the account's verification code: a new one is needed."""

    code = "verification_locked"


class RateLimited(DomainError):
    """Too many attempts in a window; `wait_seconds` until one more would be let through.
    Such a refusal may succeed later, unlike every other."""

    code = "rate_limited"

    def __init__(self, detail: str, wait_seconds: int) -> None:
        super().__init__(detail)
        self.wait_seconds = wait_seconds


class LockedOut(RateLimited):
    """Too many wrong codes from one address: it is locked out until the window moves on."""


class PeriodNotClosed(DomainError):
    """A settlement of a UTC day that has not ended yet."""

    code = "period_not_closed"


class InvalidOutcome(DomainError):
    """A case resolution's outcome that is not one of the four."""

    code = "invalid_outcome"
