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
