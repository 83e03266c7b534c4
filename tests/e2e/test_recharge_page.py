"""The recharge web page in a real browser: Debian's chromium driven by Playwright, phone-sized.

One `ledger serve` in sandbox mode (it starts the sandbox video platform on a free port, and its
SMS adapter keeps the outbox this test reads the verification codes from). A person's steps are
typed and tapped in the page; what the page shows is checked in the words a person reads.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    Api,
    Caller,
    Server,
    free_port,
    sandbox_serving,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOP_NAME = "Lotus Mobile & Co. <Pudong>"
"""Characters that must come out as text, not markup."""
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TIMEOUT_MS = 20_000


# the server, in sandbox mode, with its own sandbox platform


@pytest.fixture(scope="module")
def platform_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(database_url: str, platform_port: int) -> Iterator[Server]:
    """Overrides conftest's server: sandbox mode, the sandbox platform on a free port."""
    with sandbox_serving(database_url, platform_port, "page") as started:
        yield started


# the shop: a channel with stock and codes


@dataclass
class Shop:
    channel: Caller
    codes: list[str]

    def code(self) -> str:
        return self.codes.pop()


@pytest.fixture(scope="module")
def shop(api: Api, platform_port: int) -> Shop:
    platform = api.operator.post(
        "/v1/platforms",
        {"name": "iQiyi (sandbox)", "gateway_url": f"http://127.0.0.1:{platform_port}"},
    )
    assert platform.status_code == 201, platform.text
    product_id = api.product(platform.json()["id"])
    channel = api.top_channel(SHOP_NAME)
    api.deposit(channel, 100_000)
    api.buy(channel, product_id, 8)
    batch = channel.post("/v1/code-batches", {"product_id": product_id, "quantity": 8})
    assert batch.status_code == 201, batch.text
    return Shop(channel, list(batch.json()["codes"]))


def sms_code(api: Api, account: str) -> str:
    """The last verification code the sandbox SMS adapter sent to `account`."""
    deadline = time.monotonic() + 10
    while True:
        reply = api.operator.get(f"/v1/sandbox/sms?account={account}")
        if reply.status_code == 200:
            return str(reply.json()["code"])
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.1)


def new_account() -> str:
    return f"139{uuid.uuid4().int % 10**8:08d}"


def mistype(code: str) -> str:
    """The same code with one symbol changed: its check symbol no longer matches."""
    first = code[0]
    return ("7" if first != "7" else "8") + code[1:]


def redeem_through_the_api(api: Api, shop: Shop, code: str) -> None:
    """The channel redeems a code itself, and waits until the platform credited it."""
    account = new_account()
    sent = shop.channel.post("/v1/verification-codes", {"account": account})
    assert sent.status_code == 202, sent.text
    placed = shop.channel.post(
        "/v1/recharges",
        {"code": code, "account": account, "verification_code": sms_code(api, account)},
    )
    assert placed.status_code == 202, placed.text
    deadline = time.monotonic() + 30
    while True:
        status = shop.channel.get(f"/v1/recharges/{placed.json()['id']}")
        if status.status_code == 200 and status.json()["status"] != "pending":
            assert status.json()["status"] == "succeeded", status.text
            return
        assert time.monotonic() < deadline, status.text
        time.sleep(0.2)


# the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium; missing is a failure, not a skip: .ci/run installs it."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not on PATH: .ci/run installs it (apt-get chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A phone-sized page; Playwright's expectations wait up to TIMEOUT_MS."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page's script failed: {errors}"


def open_page(page: Any, api: Api, shop: Shop) -> None:
    reply = page.goto(f"{api.base_url}/r/{shop.channel.id}")
    assert reply is not None and reply.status == 200


def send_code(page: Any, api: Api, account: str) -> str:
    from playwright.sync_api import expect

    page.get_by_label("Your account on the video platform").fill(account)
    page.get_by_role("button", name="Send code").click()
    expect(page.locator("#send-note")).to_contain_text("We sent a 6-digit code")
    return sms_code(api, account)


def fill_and_submit(page: Any, verification_code: str, code: str) -> None:
    page.get_by_label("Verification code").fill(verification_code)
    page.get_by_label("Recharge code").fill(code)
    page.get_by_role("button", name="Recharge", exact=True).click()


def screenshot(page: Any, name: str, default_dir: Path | None = None) -> None:
    """Into RECHARGE_PAGE_SCREENSHOTS if set (every state), else `default_dir` (if given)."""
    chosen = os.environ.get("RECHARGE_PAGE_SCREENSHOTS") or default_dir
    if chosen is None:
        return
    where = Path(chosen)
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / f"{name}.png"), full_page=True)
    print(f"screenshot: {where / name}.png")


def recharge_id_of(page: Any) -> str:
    fragment = page.evaluate("location.hash")
    assert fragment.startswith("#recharge="), fragment
    return str(fragment.removeprefix("#recharge="))


# the scenarios


def test_a_person_recharges_on_a_phone_and_sees_it_succeed(
    page: Any, api: Api, shop: Shop, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    keys: list[str] = []
    page.on(
        "request",
        lambda request: keys.append(request.headers["idempotency-key"])
        if request.method == "POST"
        else None,
    )
    open_page(page, api, shop)
    expect(page.get_by_role("heading", level=1)).to_have_text(SHOP_NAME)
    for width in (320, 375, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": PHONE["height"]})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    for name in ("Send code", "Recharge"):
        box = page.get_by_role("button", name=name, exact=True).bounding_box()
        assert box is not None and box["height"] >= 44, (name, box)

    account = new_account()
    verification_code = send_code(page, api, account)
    expect(page.locator("#send-code")).to_be_disabled()
    expect(page.locator("#send-code")).to_contain_text("Again in")
    code = shop.code()
    page.get_by_label("Recharge code").fill(code)
    assert page.get_by_label("Recharge code").evaluate("e => e.scrollWidth <= e.clientWidth")
    fill_and_submit(page, verification_code, code)

    status = page.locator("#status-view")
    expect(status).to_be_visible()
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_role("heading", name="Recharge complete")).to_be_visible()
    expect(status).to_contain_text("The membership has been added to your account")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "recharge-succeeded", tmp_path)

    assert len(keys) == 2 and len(set(keys)) == 2, keys
    recharge_id = recharge_id_of(page)
    credited = shop.channel.get(f"/v1/recharges/{recharge_id}")
    assert credited.json()["status"] == "succeeded"
    assert credited.json()["account"] == account

    # the page's status tells nothing else, and only on this channel's page
    seen = api.anonymous.get(f"/r/{shop.channel.id}/recharges/{recharge_id}")
    assert seen.status_code == 200
    assert set(seen.json()) == {"status", "final", "message"}
    assert account not in seen.text
    other = api.top_channel("Another shop")
    assert api.anonymous.get(f"/r/{other.id}/recharges/{recharge_id}").status_code == 404
    assert api.anonymous.get(f"/r/{shop.channel.id}/recharges/nonsense").status_code == 404

    # the next code keeps the account; reloading the page follows the same recharge
    page.get_by_role("button", name="Recharge another code").click()
    expect(page.get_by_label("Recharge code")).to_have_value("")
    expect(page.get_by_label("Recharge code")).to_be_focused()
    expect(page.get_by_label("Your account on the video platform")).to_have_value(account)
    page.goto(f"{api.base_url}/r/{shop.channel.id}#recharge={recharge_id}")
    page.reload()
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("form")).to_be_hidden()


def test_a_mistyped_code_and_a_used_code_are_told_in_plain_words(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    used = shop.code()
    redeem_through_the_api(api, shop, used)
    code = shop.code()
    open_page(page, api, shop)
    verification_code = send_code(page, api, new_account())

    fill_and_submit(page, verification_code, mistype(code))
    error = page.locator("#code-error")
    expect(error).to_have_text("That code has a typo — please check each character.")
    screenshot(page, "recharge-code-malformed")
    expect(page.get_by_label("Recharge code")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Recharge code")).to_be_focused()

    fill_and_submit(page, verification_code, used.lower())
    expect(error).to_have_text("That code has already been used. Each code works only once.")
    expect(page.locator("#status-view")).to_be_hidden()

    fill_and_submit(page, verification_code, code)
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")


def test_a_wrong_verification_code_is_told_with_the_tries_left(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    open_page(page, api, shop)
    right = send_code(page, api, new_account())
    wrong = f"{(int(right) + 1) % 10**6:06d}"

    fill_and_submit(page, wrong, shop.codes[-1])
    error = page.locator("#verification-error")
    expect(error).to_contain_text("That verification code is wrong or has expired.")
    expect(error).to_contain_text("You have 4 more tries.")
    screenshot(page, "recharge-verification-failed")
    expect(page.get_by_label("Verification code")).to_be_focused()
    expect(page.locator("#code-error")).to_be_empty()

    fill_and_submit(page, right, shop.code())
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")


def test_a_refusal_by_the_platform_is_told_and_the_code_can_be_tried_again(
    page: Any, api: Api, shop: Shop, platform_port: int
) -> None:
    from playwright.sync_api import Route, expect

    account = new_account()
    faults = f"http://127.0.0.1:{platform_port}/sandbox/faults"
    assert httpx.post(faults, json={"fail_accounts": [account]}).status_code == 200
    polls: list[str] = []

    def first_poll_pending(route: Route) -> None:
        """The first answer is held at pending, so the pending view is seen for sure."""
        polls.append(route.request.url)
        if len(polls) == 1:
            route.fulfill(json={"status": "pending", "final": False, "message": "Hold on."})
        else:
            route.continue_()

    page.route("**/r/*/recharges/*", first_poll_pending)
    try:
        open_page(page, api, shop)
        verification_code = send_code(page, api, account)
        code = shop.codes[-1]
        fill_and_submit(page, verification_code, code)
        status = page.locator("#status-view")
        expect(status).to_have_attribute("data-status", "pending")
        expect(page.get_by_role("heading", name="Recharging…")).to_be_visible()
        expect(page.locator("#again")).to_be_hidden()
        screenshot(page, "recharge-pending")
        expect(status).to_have_attribute("data-status", "failed")
    finally:
        httpx.post(faults, json={"fail_accounts": []})
    expect(page.get_by_role("heading", name="Recharge failed")).to_be_visible()
    expect(status).to_contain_text(
        "The video platform cannot add a membership to this account. Please check the account."
        " Your code was not used: you can try it again."
    )
    screenshot(page, "recharge-failed")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_label("Recharge code")).to_have_value(code)
    expect(page.get_by_label("Verification code")).to_have_value("")
    expect(page.get_by_label("Verification code")).to_be_focused()


def test_too_many_codes_for_one_account_says_how_long_to_wait(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    account = new_account()
    for _ in range(3):
        assert shop.channel.post("/v1/verification-codes", {"account": account}).status_code == 202
    open_page(page, api, shop)
    page.get_by_label("Your account on the video platform").fill(account)
    with page.expect_response(lambda response: "/v1/verification-codes" in response.url) as sent:
        page.get_by_role("button", name="Send code").click()
    assert sent.value.status == 429
    retry_after = int(sent.value.headers["retry-after"])
    minutes = -(-retry_after // 60)
    wait = f"{retry_after} seconds" if retry_after < 90 else f"about {minutes} minutes"
    expect(page.locator("#form-error")).to_have_text(
        f"You have asked for too many codes. Please wait {wait} and try again."
    )
    expect(page.locator("#send-code")).to_be_disabled()
    screenshot(page, "recharge-rate-limited")


def test_a_typo_in_the_account_is_caught_before_sending(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    open_page(page, api, shop)
    page.get_by_label("Your account on the video platform").fill("13 9 00")
    page.get_by_role("button", name="Send code").click()
    expect(page.locator("#account-error")).to_contain_text("Please enter your account")
    expect(page.locator("#send-note")).to_be_empty()


def test_an_unknown_channel_has_a_plain_not_found_page(page: Any, api: Api) -> None:
    from playwright.sync_api import expect

    for ref in (str(uuid.uuid4()), "not-a-channel"):
        reply = page.goto(f"{api.base_url}/r/{ref}")
        assert reply is not None and reply.status == 404
        expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        expect(page.locator("main")).to_contain_text("This recharge page does not exist.")
        expect(page.locator("form")).to_have_count(0)
    screenshot(page, "recharge-not-found")


def test_a_suspended_channel_says_so_and_offers_no_form(page: Any, api: Api) -> None:
    from playwright.sync_api import expect

    paused = api.top_channel("Paused Corner Shop")
    assert api.operator.post(f"/v1/channels/{paused.id}/suspension").status_code in (200, 204)
    reply = page.goto(f"{api.base_url}/r/{paused.id}")
    assert reply is not None and reply.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Paused Corner Shop")
    expect(page.get_by_role("heading", name="Recharges are paused")).to_be_visible()
    expect(page.locator("form")).to_have_count(0)
    screenshot(page, "recharge-suspended")
