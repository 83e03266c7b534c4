"""The README's walkthrough, run as written: every ```sh block of its "Walkthrough" section, in
order, in one bash (`set -euo pipefail`), against `ledger serve --demo` in sandbox mode, with the
environment a newcomer has after `scripts/run`: at the repository's root (the walkthrough's
first line activates .venv) with the `export` line the demo printed, taken from the server's own
output. The only difference is that the test database
stands in for the embedded one (DATABASE_URL, which `ledger tokens create`, `ledger verify` and
the other tools then use) and that the webhook receiver gets a free port (WEBHOOK_PORT, which
the walkthrough reads with a default).

The script runs once per module; each test checks one part of what it printed. A block that
exits non-zero stops the script; every test then fails, showing the command that failed and
the output before it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import free_port, sandbox_serving

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Walkthrough"
MARK = "::walkthrough block {}::"
SCRIPT_SECONDS = 300  # catches a hang; measured 94-204 s with the 2 cores at load 10-13
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def walkthrough_section() -> str:
    text = README.read_text()
    assert SECTION + "\n" in text, f"README.md has no {SECTION!r} section"
    start = text.index(SECTION + "\n") + len(SECTION)
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def printed_exports(log: str) -> dict[str, str]:
    """The `export NAME=value ...` line the demo printed (the one with LEDGER_KEY_ID)."""
    for line in log.splitlines():
        words = shlex.split(line.strip()) if line.strip().startswith("export ") else []
        pairs = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        if "LEDGER_KEY_ID" in pairs:
            return pairs
    pytest.fail(f"the demo printed no `export LEDGER_KEY_ID=...` line:\n{log[-3000:]}")


@dataclass
class Run:
    """What the walkthrough printed, block by block (stdout and stderr interleaved)."""

    returncode: int
    blocks: list[str]
    output: str
    seconds: float
    exports: dict[str, str]
    server_url: str
    scratch: Path

    def block(self, index: int) -> str:
        assert self.returncode == 0, self.failure()
        return self.blocks[index]

    def failure(self) -> str:
        return f"the walkthrough stopped with exit {self.returncode}:\n{self.output[-6000:]}"


def split_blocks(output: str, count: int) -> list[str]:
    parts = []
    for i in range(count):
        start = output.find(MARK.format(i))
        end = output.find(MARK.format(i + 1)) if i + 1 < count else len(output)
        parts.append("" if start == -1 else output[start : end if end != -1 else len(output)])
    return parts


@pytest.fixture(scope="module")
def walkthrough(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    blocks = sh_blocks(walkthrough_section())
    assert len(blocks) >= 8, "the Walkthrough section lost its sh blocks"
    scratch = tmp_path_factory.mktemp("walkthrough")
    script = scratch / "walkthrough.sh"
    script.write_text(
        """trap 'echo "::walkthrough failed:: $BASH_COMMAND" >&2' ERR\n"""
        + "".join(
            f'echo "{MARK.format(i)} $EPOCHREALTIME"\n{block}\n' for i, block in enumerate(blocks)
        )
        + f'echo "{MARK.format(len(blocks))} $EPOCHREALTIME"\n'
    )
    with sandbox_serving(database_url, free_port(), "walkthrough", args=("--demo",)) as server:
        exports = printed_exports(server.log.read_text(errors="replace"))
        assert exports["LEDGER_URL"] == server.base_url, "the demo prints where it serves"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")},
            **exports,
            "DATABASE_URL": database_url,
            "WEBHOOK_PORT": str(free_port()),
            "TMPDIR": str(scratch),
            "COLUMNS": "120",
        }
        started = time.monotonic()
        printed = scratch / "output.txt"
        with printed.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            process.wait(timeout=SCRIPT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            text = printed.read_text(errors="replace")
            pytest.fail(f"the walkthrough ran over {SCRIPT_SECONDS} s:\n{text[-6000:]}")
        finally:
            # the webhook receiver, if the script stopped before its last line killed it
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        seconds = time.monotonic() - started
        output = printed.read_text(errors="replace")
        stamps = [float(s) for s in re.findall(MARK.format(r"\d+") + r" ([\d.]+)", output)]
        each = ", ".join(f"{after - before:.1f}" for before, after in pairwise(stamps))
        print(f"the walkthrough ran in {seconds:.1f} s (block by block: {each} s)")
        yield Run(
            process.returncode,
            split_blocks(output, len(blocks)),
            output,
            seconds,
            exports,
            server.base_url,
            scratch,
        )


def block_with(run: Run, text: str) -> str:
    """The output of the block whose commands contain `text` (the README's order may change)."""
    blocks = sh_blocks(walkthrough_section())
    found = [i for i, block in enumerate(blocks) if text in block]
    assert found, f"no walkthrough block runs {text!r}"
    return run.block(found[0])


def answers(output: str) -> list[dict[str, Any]]:
    """Every JSON object printed (by `ledger call` or `pick`), in order."""
    found = []
    for match in re.finditer(r"^\{", output, re.M):
        with suppress(ValueError):
            decoded, _ = json.JSONDecoder().raw_decode(output[match.start() :])
            if isinstance(decoded, dict):
                found.append(decoded)
    return found


def cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def test_every_command_of_the_walkthrough_succeeds(walkthrough: Run) -> None:
    assert walkthrough.returncode == 0, walkthrough.failure()
    assert all(walkthrough.blocks), "every block ran"
    assert "Traceback" not in walkthrough.output, walkthrough.output[-6000:]


def test_the_export_line_shown_is_the_one_the_demo_prints(walkthrough: Run) -> None:
    shown = re.search(r"^ {4}export (LEDGER_URL=.*)$", walkthrough_section(), re.M)
    assert shown, "the Walkthrough shows the demo's export line"
    pairs = dict(word.split("=", 1) for word in shlex.split(shown.group(1)))
    printed = walkthrough.exports | {"LEDGER_URL": "http://127.0.0.1:8000"}
    assert pairs == printed


def test_a_code_is_recharged_to_succeeded_and_the_signed_webhook_arrives(walkthrough: Run) -> None:
    issued = answers(block_with(walkthrough, "/v1/code-batches"))
    (batch,) = [answer for answer in issued if "codes" in answer]
    assert len(batch["codes"]) == 2
    assert all(re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){4}", code) for code in batch["codes"])
    (sms,) = [answer for answer in issued if "code" in answer]
    assert re.fullmatch(r"\d{4,8}", str(sms["code"])), "the sandbox shows the verification code"

    output = block_with(walkthrough, "/v1/recharges --body")
    recharged = answers(output)
    assert recharged[0]["status"] == "pending", "202 pending first"
    recharge = recharged[0]["id"]
    final = recharged[-1] if recharged[-1].get("id") == recharge else {}
    assert final.get("status") == "succeeded", output
    assert final["account"] == "13800138000"
    assert final["membership"], "a succeeded recharge names the membership"
    assert re.search(r"^succeeded$", output, re.M), "the poll ends on succeeded"

    logs = list(walkthrough.scratch.glob("tmp*/webhooks.log"))
    assert logs, "the walkthrough's receiver wrote its log"
    lines = [line for log in logs for line in log.read_text().splitlines()]
    (line,) = [line for line in lines if recharge in line]
    match = re.fullmatch(rf"signature valid event ({UUID}) (\{{.*\}})", line)
    assert match, line
    event = json.loads(match.group(2))
    assert event["event_id"] == match.group(1)
    assert event["type"] == "recharge.succeeded"
    assert event["data"]["id"] == recharge and event["data"]["status"] == "succeeded"
    assert line in output, "the walkthrough shows the delivery"


def test_a_card_is_bought_shared_consumed_and_its_commission_withdrawn(
    walkthrough: Run, database_url: str
) -> None:
    bought = answers(block_with(walkthrough, "/v1/cards --token"))
    (card,) = [answer for answer in bought if "balance" in answer]
    assert (card["balance"], card["discount_bp"]) == (cny(110_000), 8000), "pay + bonus"
    (spent,) = [answer for answer in bought if "card_debited" in answer]
    assert spent["card_debited"] == cny(4000), "50.00 at 80 % from the main card"

    shared = answers(block_with(walkthrough, "/shared-cards"))
    (consumed,) = [answer for answer in shared if "consumer_pays" in answer]
    assert consumed["consumer_pays"] == cny(9000) and consumed["card_debited"] == cny(0)
    assert {s["party"]: s["amount"] for s in consumed["splits"]} == {
        "merchant": 8000,
        "owner": 1000,
    }
    (main,) = [answer for answer in shared if answer.get("kind") == "main"]
    assert main["balance"] == cny(106_000), "a shared card does not draw the main card"

    withdrawn = answers(block_with(walkthrough, "/v1/withdrawals"))
    wallets = [answer["available"] for answer in withdrawn if "available" in answer]
    assert wallets == [cny(1000), cny(0)]
    (withdrawal,) = [answer for answer in withdrawn if "status" in answer]
    assert (withdrawal["status"], withdrawal["amount"]) == ("paid", cny(1000))

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM sandbox_payouts").fetchone()
    assert row is not None and row[0] == 1, "one payout was made"


def test_the_operators_and_finances_first_commands(walkthrough: Run) -> None:
    output = block_with(walkthrough, "ledger projections status")
    assert re.search(r"balances +. distribution .* running", output), output
    channels, review, by_account, audit = answers(output)
    names = {item["name"] for item in channels["items"]}
    assert {"East China Digital", "Shanghai Telecom Shops", "Pudong Store 12"} <= names
    assert review["items"] == [], "nothing waits in the review queue"
    assert [item["status"] for item in by_account["items"]] == ["succeeded"]
    assert {line["kind"] for line in audit["items"]} >= {"token_use"}, "these calls are audited"
    assert "balances: version 2 is live (was 1)" in output

    output = block_with(walkthrough, "ledger verify")
    trial = [answer for answer in answers(output) if "balanced" in answer]
    assert trial and trial[0]["balanced"] is True
    assert re.search(r"^OK: .*hash chains intact", output, re.M), output
    assert re.search(r"^OK: the checkpoint of \S+ holds", output, re.M), output
    assert "account,asset,opening,debits,credits,closing" in output
    journal = next(walkthrough.scratch.glob("tmp*/journal.csv")).read_text().splitlines()
    assert journal[0].startswith("recorded_at,"), journal[:2]
    assert len(journal) > 40, "every posting of the demo and the walkthrough"
