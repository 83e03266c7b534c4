"""Building the API's container from the settings: every adapter chosen here, once."""

from __future__ import annotations

from typing import Any

from adapters.audit_log import AuditLog
from adapters.rate_limits import RateLimiter
from adapters.sealed_codes import SealedBatchCodes
from adapters.settings import Settings
from adapters.sms import NoSmsProvider, SandboxSms
from adapters.verification import PostgresVerificationCodes
from api.container import Services
from api.principals import Authenticator
from ledger.cards.application import Cards
from ledger.cards.settlements import MerchantSettlements
from ledger.distribution.application import Distribution
from ledger.recharges.placement import PlacementLimits, RechargePlacement
from ledger.recharges.platform_news import PlatformNews
from projections.merchant_statements import MerchantStatementsReader
from projections.views import Views


def build_services(settings: Settings, database_url: str, runtime: Any) -> Services:
    """Build every collaborator; `runtime` lends its pool and its applications."""
    pool = runtime.pool  # one read pool per process, sized from LEDGER_DB_CONNECTIONS
    limiter = RateLimiter(pool)
    sandbox_sms = SandboxSms(pool) if settings.sandbox else None
    distribution: Distribution = runtime.distribution
    # the runtime's Cards has the payments, the payouts (kept in the database, where the
    # sweeper's retry finds them) and the member tokens
    cards: Cards = runtime.cards
    authenticator = Authenticator(
        pool, settings.secret_bytes, settings.ledger_signature_window_seconds
    )
    authenticator.accept_keys(
        "ck_",
        "channel",
        lambda channel_id, key_id: channel_holding(distribution, channel_id, key_id),
    )
    authenticator.accept_keys(
        "mk_", "merchant", lambda merchant_id, key_id: cards.merchant(merchant_id).key_id == key_id
    )
    return Services(
        settings=settings,
        pool=pool,
        distribution=distribution,
        recharges=runtime.recharges,
        cards=cards,
        views=Views(pool),
        authenticator=authenticator,
        placement=RechargePlacement(
            distribution,
            limiter,
            PostgresVerificationCodes(pool, settings.secret_bytes, sandbox_sms or NoSmsProvider()),
            PlacementLimits(
                account_per_minute=settings.ledger_rate_account_per_minute,
                address_per_minute=settings.ledger_rate_address_per_minute,
                channel_per_minute=settings.ledger_rate_channel_per_minute,
                wrong_codes=settings.ledger_lockout_wrong_codes,
            ),
        ),
        sandbox_sms=sandbox_sms,
        audit_log=AuditLog(pool),
        sealed_codes=SealedBatchCodes(pool, settings.secret_bytes),
        platform_news=PlatformNews(runtime.recharges, distribution),
        merchant_settlements=MerchantSettlements(cards, MerchantStatementsReader(pool)),
        merchant_statements=MerchantStatementsReader(pool),
        settlements=runtime.settlements,
        settlement_steps=runtime.settlement_steps,
    )


def channel_holding(distribution: Distribution, channel_id: Any, key_id: str) -> Any:
    """The channel, read once for the request (the principal carries it), if it holds the key."""
    channel = distribution.channel(channel_id)
    return channel if channel.key_id == key_id else None
