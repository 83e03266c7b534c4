"""The sandbox platform's fault switches, set at start (`ledger sandbox-platform --latency-ms
...`) or at run time with ``POST /sandbox/faults``:

* ``latency_ms``: every partner request waits this long first;
* ``error_rate`` (0..1): this fraction of partner requests is answered 503 before anything is done;
* ``timeout_after_credit`` (N): the next N recharges that credit do so and then hang for
  ``hang_seconds`` (longer than the client's read timeout) before answering;
* ``fail_accounts``: recharges to these accounts fail definitely, with a reason;
* ``hang_seconds``: how long a time-out-after-credit hangs.

Order callbacks (`adapters.sandbox.callbacks`), posted signed to ``callback_url`` (the
ledger's ``/v1/platform-callbacks/{platform_id}``; none while it is unset) once an order is
final, and retried until a 2xx like a real platform's:

* ``callback_probability`` (0..1): the fraction of final orders called back at all;
* ``callback_delay_ms``: each callback waits this long (plus up to as much again at random
  when ``callback_out_of_order`` is on) after the order's outcome;
* ``callback_duplicates`` (N): each callback is sent N more times;
* ``callback_out_of_order``: callbacks overtake one another, and each order's final callback
  is followed by a stale ``processing`` one;
* ``callback_bad_signatures`` (N): the next N callback posts are signed with a wrong secret
  (the retry after a refusal is signed right);
* ``late_success_accounts``: recharges to these accounts fail first (answers and a ``failed``
  callback), then after ``late_success_after_ms`` the platform credits them after all and
  calls back ``success`` (its status queries say success from then on).

Refunds (``/partner/v1/refund``, idempotent by ``refund_no``):

* ``refund_review_ms``: a refund stays ``pending`` (in review) this long;
* ``refund_rejection_rate`` (0..1): the fraction of refunds the review rejects;
* ``refund_callbacks``: the review's outcome is called back (``accepted`` or ``rejected``
  with the ``refund_no``) to ``callback_url``, with the callback knobs above.

Statements (``/partner/v1/statement``, `adapters.sandbox.statements`), each knob naming the
orders whose lines it changes:

* ``statement_not_ready_seconds``: a statement is published this long after it was first
  asked for (and never before its day has ended, unless the request says ``close_now``);
* ``statement_drop_orders``: these orders' lines are left out;
* ``statement_extra_lines`` (N): N lines of orders the partner never sent are added;
* ``statement_amount_orders``: these orders' lines are billed ``statement_amount_delta``
  (minor units) more;
* ``statement_next_day_orders``: these orders' lines go on the next day's statement, as if
  booked just past midnight (a timing difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HANG_SECONDS = 10.0


@dataclass(frozen=True)
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_after_credit: int = 0
    fail_accounts: tuple[str, ...] = ()
    hang_seconds: float = DEFAULT_HANG_SECONDS
    callback_url: str | None = None
    callback_probability: float = 1.0
    callback_delay_ms: int = 0
    callback_duplicates: int = 0
    callback_out_of_order: bool = False
    callback_bad_signatures: int = 0
    late_success_accounts: tuple[str, ...] = ()
    late_success_after_ms: int = 1000
    refund_review_ms: int = 500
    refund_rejection_rate: float = 0.0
    refund_callbacks: bool = True
    statement_not_ready_seconds: float = 0.0
    statement_drop_orders: tuple[str, ...] = ()
    statement_extra_lines: int = 0
    statement_amount_orders: tuple[str, ...] = ()
    statement_amount_delta: int = 100
    statement_next_day_orders: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "timeout_after_credit": self.timeout_after_credit,
            "fail_accounts": list(self.fail_accounts),
            "hang_seconds": self.hang_seconds,
            "callback_url": self.callback_url,
            "callback_probability": self.callback_probability,
            "callback_delay_ms": self.callback_delay_ms,
            "callback_duplicates": self.callback_duplicates,
            "callback_out_of_order": self.callback_out_of_order,
            "callback_bad_signatures": self.callback_bad_signatures,
            "late_success_accounts": list(self.late_success_accounts),
            "late_success_after_ms": self.late_success_after_ms,
            "refund_review_ms": self.refund_review_ms,
            "refund_rejection_rate": self.refund_rejection_rate,
            "refund_callbacks": self.refund_callbacks,
            "statement_not_ready_seconds": self.statement_not_ready_seconds,
            "statement_drop_orders": list(self.statement_drop_orders),
            "statement_extra_lines": self.statement_extra_lines,
            "statement_amount_orders": list(self.statement_amount_orders),
            "statement_amount_delta": self.statement_amount_delta,
            "statement_next_day_orders": list(self.statement_next_day_orders),
        }


class FaultsUpdate(BaseModel):
    """Body of ``POST /sandbox/faults``: the switches given are set, the others kept."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_after_credit: int | None = Field(default=None, ge=0, le=1_000_000)
    fail_accounts: list[str] | None = Field(default=None, max_length=10_000)
    hang_seconds: float | None = Field(default=None, gt=0, le=3_600)
    callback_url: str | None = Field(default=None, pattern=r"^(https?://\S+)?$", max_length=2_000)
    """The ledger's callback URL; "" unsets it."""
    callback_probability: float | None = Field(default=None, ge=0.0, le=1.0)
    callback_delay_ms: int | None = Field(default=None, ge=0, le=600_000)
    callback_duplicates: int | None = Field(default=None, ge=0, le=100)
    callback_out_of_order: bool | None = None
    callback_bad_signatures: int | None = Field(default=None, ge=0, le=1_000_000)
    late_success_accounts: list[str] | None = Field(default=None, max_length=10_000)
    late_success_after_ms: int | None = Field(default=None, ge=0, le=600_000)
    refund_review_ms: int | None = Field(default=None, ge=0, le=3_600_000)
    refund_rejection_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    refund_callbacks: bool | None = None
    statement_not_ready_seconds: float | None = Field(default=None, ge=0, le=86_400)
    statement_drop_orders: list[str] | None = Field(default=None, max_length=10_000)
    statement_extra_lines: int | None = Field(default=None, ge=0, le=10_000)
    statement_amount_orders: list[str] | None = Field(default=None, max_length=10_000)
    statement_amount_delta: int | None = Field(default=None, ge=-10**9, le=10**9)
    statement_next_day_orders: list[str] | None = Field(default=None, max_length=10_000)
