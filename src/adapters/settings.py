"""Every setting comes from the environment through this one object."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-secret-change-me"


class Settings(BaseSettings):
    """Read from environment variables (names in the README's configuration table)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset means the embedded PostgreSQL in LEDGER_DATA_DIR.",
    )
    broker_url: str | None = Field(
        default=None,
        description="amqp://… (RabbitMQ) or redis://…; unset means in-process workers.",
    )
    ledger_secret_key: str = Field(
        default=DEV_SECRET,
        description="Derives channel key secrets and signs checkpoints. Set it in production.",
    )
    ledger_code_hash_key: str = Field(
        default=DEV_SECRET, description="Key of the HMAC under which redemption codes are stored."
    )
    ledger_sandbox: bool | None = Field(
        default=None,
        description="Sandbox adapters and endpoints; on by default only in the embedded default.",
    )
    ledger_data_dir: Path = Field(
        default=Path(".data"), description="Where the embedded PostgreSQL keeps its data."
    )
    ledger_max_body_bytes: int = Field(default=65_536, description="Largest request body.")
    ledger_signature_window_seconds: int = Field(default=300)
    ledger_run_projections: bool = Field(
        default=True, description="Run the projection runners inside `ledger serve`."
    )
    ledger_projections_feeds: Literal["all", "views", "sagas"] = Field(
        default="all",
        description="What `ledger projections run` runs: the views, the sagas (the saga "
        "starter, the outbox dispatcher and the sweepers), or all of them.",
    )
    ledger_wake_pace_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="A process running the projection runners (`ledger projections run`, or "
        "`ledger serve` with its runners) wakes the runners of a log at most once in this many "
        "milliseconds: notifications closer together are gathered into one round.",
    )
    ledger_views_wake_pace_ms: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="The same for a process that runs the views alone (`ledger projections "
        "run --feeds views`): a recharge's saga waits for no view, so the views gather more "
        "of a steady load into each round and leave the CPU to the acceptance and the sagas.",
    )
    ledger_db_connections: int = Field(
        default=20,
        ge=9,
        description="The most PostgreSQL connections one process holds: every pool (the read "
        "pool, each application's event store, the views, the saga starter) is sized from it.",
    )
    ledger_platform_partner_id: str = Field(
        default="ledger-sandbox",
        description="Our partner id at the video platform (X-Partner-Id of the partner API).",
    )
    ledger_platform_secret: str = Field(
        default=DEV_SECRET,
        description="Shared HMAC secret signing partner API requests and the platform's answers.",
    )

    ledger_recharge_deadline_seconds: int = Field(
        default=600, description="After this, a recharge with an unknown outcome goes to review."
    )
    ledger_page_pending_notice_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="A recharge still pending this long after it was placed: the recharge page "
        "says the platform has not confirmed it yet, that the code is kept for it, and what to do.",
    )
    ledger_rate_account_per_minute: int = Field(default=10, description="Recharges per account.")
    ledger_rate_address_per_minute: int = Field(
        default=30, description="Recharges (and SMS sends) per client address."
    )
    ledger_rate_channel_per_minute: int = Field(default=1200, description="Recharges per channel.")
    ledger_audit_retention_days: int = Field(
        default=90, ge=2, description="Days the audit log keeps a line; the sweeper prunes older."
    )
    ledger_lockout_wrong_codes: int = Field(
        default=10, description="Wrong codes from one address in 15 minutes before a lock-out."
    )
    ledger_trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses whose X-Forwarded-For is believed (the load "
        "balancers); client addresses drive the per-address limits.",
    )
    ledger_share_depth: int = Field(
        default=1,
        ge=0,
        le=10,
        description="How many times a card its owner shared may be passed on (anti-pyramid cap).",
    )
    ledger_worker_threads: int = Field(
        default=8,
        description="Threads of each dramatiq worker: each waits on a partner call most of a "
        "step, so at peak 4 let the steps fall behind (benchmarks/README.md).",
    )
    ledger_sandbox_platform_port: int = Field(
        default=8100, description="Port of the sandbox platform `ledger serve` starts (sandbox)."
    )
    ledger_sandbox_platform_start: bool = Field(
        default=True,
        description="false: `ledger serve` starts no sandbox platform and uses the one already "
        "running on LEDGER_SANDBOX_PLATFORM_PORT (API processes sharing one, a test's own).",
    )
    ledger_gateway_timeout_seconds: float = Field(
        default=5.0, description="Read timeout of calls to a platform's partner API."
    )
    ledger_payout_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A withdrawal still pending this long after it was asked is paid out again "
        "by the sweeper, with the same payout id (paid once).",
    )
    ledger_sandbox_payout_exit: bool = Field(
        default=False,
        description="Sandbox only, for crash tests: the process kills itself right after the "
        "sandbox payout is made, before the withdrawal records it.",
    )
    ledger_sandbox_batch_exit: bool = Field(
        default=False,
        description="Sandbox only, for crash tests: the process kills itself right after a code "
        "batch is saved, before its answer is stored.",
    )
    ledger_sandbox_refund_exit: bool = Field(
        default=False,
        description="Sandbox only, for crash tests: the process kills itself right after a "
        "platform answered a refund request, before the answer is recorded.",
    )
    ledger_sandbox_settlement_exit: Literal["", "collect", "statement", "reconcile", "pay"] = (
        Field(
            default="",
            description="Sandbox only, for crash tests: the process kills itself inside that "
            "step of a platform settlement, before the step is recorded: once our side is read "
            "(collect), once the statement is fetched (statement), once the lines are matched "
            "(reconcile), once the platform answered the payment (pay).",
        )
    )

    ledger_outbound_allow_private: bool | None = Field(
        default=None,
        description="Let webhooks and platform gateway calls reach loopback, link-local, private "
        "and metadata addresses; on by default only in sandbox mode.",
    )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def sandbox(self) -> bool:
        return self.embedded if self.ledger_sandbox is None else self.ledger_sandbox

    @property
    def outbound_allow_private(self) -> bool:
        allowed = self.ledger_outbound_allow_private
        return self.sandbox if allowed is None else allowed

    @cached_property
    def secret_bytes(self) -> bytes:
        return self.ledger_secret_key.encode()
