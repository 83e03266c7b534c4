"""The sandbox platform's fault switches, set at start (`ledger sandbox-platform --latency-ms
...`) or at run time with ``POST /sandbox/faults``:

* ``latency_ms``: every partner request waits this long first;
* ``error_rate`` (0..1): this fraction of partner requests is answered 503 before anything is done;
* ``timeout_after_credit`` (N): the next N recharges that credit do so and then hang for
  ``hang_seconds`` (longer than the client's read timeout) before answering;
* ``fail_accounts``: recharges to these accounts fail definitely, with a reason;
* ``hang_seconds``: how long a time-out-after-credit hangs.
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

    def as_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "timeout_after_credit": self.timeout_after_credit,
            "fail_accounts": list(self.fail_accounts),
            "hang_seconds": self.hang_seconds,
        }


class FaultsUpdate(BaseModel):
    """Body of ``POST /sandbox/faults``: the switches given are set, the others kept."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout_after_credit: int | None = Field(default=None, ge=0, le=1_000_000)
    fail_accounts: list[str] | None = Field(default=None, max_length=10_000)
    hang_seconds: float | None = Field(default=None, gt=0, le=3_600)
