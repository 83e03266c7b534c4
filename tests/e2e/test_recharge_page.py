"""The recharge web page in a real browser: Debian's chromium driven by Playwright, phone-sized,
in both of its languages.

One `ledger serve` in sandbox mode (it starts the sandbox video platform on a free port, and its
SMS adapter keeps the outbox this test reads the verification codes from). A person's steps are
typed and tapped in the page; what the page shows is checked in the words a person reads:
Simplified Chinese by default, English when the phone asks for it or the switch is tapped.

Screenshots of each state go to `test-output/screenshots/recharge-page/` (git-ignored), or to
RECHARGE_PAGE_SCREENSHOTS when it is set; each path is printed (`pytest -s` shows them).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
PLAN = "爱奇艺黄金会员 月卡"
PLAN_DAYS = 31
PENDING_NOTICE_SECONDS = 4
"""The server's LEDGER_PAGE_PENDING_NOTICE_SECONDS (30 by default), short so no test waits 30 s."""
TIMEOUT_MS = 20_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots" / "recharge-page"
BEIJING = timezone(timedelta(hours=8))

# What a person reads, in each language: the labels and buttons the steps below use.
WORDS = {
    "zh": {
        "account": "视频平台账号",
        "verification": "验证码",
        "code": "兑换码",
        "send": "获取验证码",
        "submit": "立即充值",
        "sent": "6 位验证码已发送至 {account}，5 分钟内有效。",
        "complete": "充值成功",
        "another": "再充值一张卡",
    },
    "en": {
        "account": "Your account on the video platform",
        "verification": "Verification code",
        "code": "Recharge code",
        "send": "Send code",
        "submit": "Recharge",
        "sent": "We sent a 6-digit code to {account}. It is valid for 5 minutes.",
        "complete": "Recharge complete",
        "another": "Recharge another code",
    },
}


# the server, in sandbox mode, with its own sandbox platform


@pytest.fixture(scope="module")
def platform_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(database_url: str, platform_port: int) -> Iterator[Server]:
    """Overrides conftest's server: sandbox mode, the sandbox platform on a free port, the
    pending notice after a few seconds, and room for this module's taps from one address."""
    with sandbox_serving(
        database_url,
        platform_port,
        "page",
        LEDGER_PAGE_PENDING_NOTICE_SECONDS=str(PENDING_NOTICE_SECONDS),
        LEDGER_RATE_ADDRESS_PER_MINUTE="600",
    ) as started:
        yield started


# the shop: a channel with stock and codes of a Chinese plan


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
        {"name": "爱奇艺 (sandbox)", "gateway_url": f"http://127.0.0.1:{platform_port}"},
    )
    assert platform.status_code == 201, platform.text
    product = api.operator.post(
        "/v1/products",
        {
            "platform_id": platform.json()["id"],
            "name": PLAN,
            "duration_days": PLAN_DAYS,
            "face_value": {"amount": 3000, "currency": "CNY"},
            "wholesale_cost": {"amount": 2000, "currency": "CNY"},
        },
    )
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]
    channel = api.top_channel(SHOP_NAME)
    api.deposit(channel, 100_000)
    api.buy(channel, product_id, 14)
    batch = channel.post("/v1/code-batches", {"product_id": product_id, "quantity": 14})
    assert batch.status_code == 201, batch.text
    return Shop(channel, list(batch.json()["codes"]))


@pytest.fixture
def faults(platform_port: int) -> Iterator[str]:
    """The sandbox platform's fault switches, all off again afterwards."""
    url = f"http://127.0.0.1:{platform_port}/sandbox/faults"
    try:
        yield url
    finally:
        httpx.post(url, json={"fail_accounts": [], "error_rate": 0.0})


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


@dataclass
class Phone:
    """A phone-sized browser context whose Accept-Language follows its `locale`."""

    browser: Any

    def open(self, locale: str) -> Any:
        from playwright.sync_api import expect

        expect.set_options(timeout=TIMEOUT_MS)
        context = self.browser.new_context(
            viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale=locale
        )
        self.contexts.append(context)
        opened = context.new_page()
        opened.set_default_timeout(TIMEOUT_MS)
        opened.on("pageerror", lambda error: self.errors.append(str(error)))
        return opened

    def __post_init__(self) -> None:
        self.contexts: list[Any] = []
        self.errors: list[str] = []


@pytest.fixture
def phone(browser: Any) -> Iterator[Phone]:
    opened = Phone(browser)
    try:
        yield opened
    finally:
        for context in opened.contexts:
            context.close()
    assert not opened.errors, f"the page's script failed: {opened.errors}"


@pytest.fixture
def page(phone: Phone) -> Any:
    """A phone set to Simplified Chinese (Accept-Language: zh-CN)."""
    return phone.open("zh-CN")


def open_page(page: Any, api: Api, shop: Shop, query: str = "") -> None:
    reply = page.goto(f"{api.base_url}/r/{shop.channel.id}{query}")
    assert reply is not None and reply.status == 200


def send_code(page: Any, api: Api, account: str, lang: str = "zh") -> str:
    from playwright.sync_api import expect

    words = WORDS[lang]
    page.get_by_label(words["account"], exact=True).fill(account)
    page.get_by_role("button", name=words["send"], exact=True).click()
    expect(page.locator("#send-note")).to_have_text(words["sent"].format(account=account))
    return sms_code(api, account)


def fill_and_submit(page: Any, verification_code: str, code: str, lang: str = "zh") -> None:
    words = WORDS[lang]
    page.get_by_label(words["verification"], exact=True).fill(verification_code)
    page.get_by_label(words["code"], exact=True).fill(code)
    page.get_by_role("button", name=words["submit"], exact=True).click()


def screenshot(page: Any, name: str) -> Path:
    """Into RECHARGE_PAGE_SCREENSHOTS if set, else test-output/screenshots/recharge-page/."""
    where = Path(os.environ.get("RECHARGE_PAGE_SCREENSHOTS") or SCREENSHOTS)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def recharge_id_of(page: Any) -> str:
    fragment = page.evaluate("location.hash")
    assert fragment.startswith("#recharge="), fragment
    return str(fragment.removeprefix("#recharge="))


def credited_until(shop: Shop, recharge_id: str) -> datetime:
    """The membership's end the platform reported, read through the channel's API."""
    credited = shop.channel.get(f"/v1/recharges/{recharge_id}")
    assert credited.status_code == 200, credited.text
    assert credited.json()["status"] == "succeeded", credited.text
    return datetime.fromisoformat(credited.json()["membership"]["ends_at"]).astimezone(BEIJING)


def fits_the_phone(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


# the scenarios


def test_a_chinese_phone_recharges_and_is_told_the_plan_and_the_period(
    page: Any, api: Api, shop: Shop
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
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    expect(page.get_by_role("heading", level=1)).to_have_text(SHOP_NAME)
    expect(page).to_have_title(f"会员充值 · {SHOP_NAME}")
    expect(page.locator("#language-switch")).to_have_text("English")
    for width in (320, 375, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": PHONE["height"]})
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    for name in ("获取验证码", "立即充值", "English"):
        box = page.get_by_role("button" if name != "English" else "link", name=name).bounding_box()
        assert box is not None and box["height"] >= 44, (name, box)
    screenshot(page, "zh-form")

    account = new_account()
    verification_code = send_code(page, api, account)
    expect(page.locator("#send-code")).to_be_disabled()
    expect(page.locator("#send-code")).to_contain_text("秒后重发")
    code = shop.code()
    page.get_by_label("兑换码", exact=True).fill(code)
    assert page.get_by_label("兑换码", exact=True).evaluate("e => e.scrollWidth <= e.clientWidth")
    fill_and_submit(page, verification_code, code)

    status = page.locator("#status-view")
    expect(status).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_role("heading", name="充值成功")).to_be_visible()
    recharge_id = recharge_id_of(page)
    until = credited_until(shop, recharge_id)
    expect(page.locator("#status-message")).to_have_text(
        f"充值成功！已为您的账号开通「{PLAN}」，共 {PLAN_DAYS} 天，"
        f"有效期至 {until.year}年{until.month}月{until.day}日。祝您观影愉快。"
    )
    fits_the_phone(page)
    screenshot(page, "zh-succeeded")
    assert len(keys) == 2 and len(set(keys)) == 2, keys

    # the page's status tells nothing of the account, and only on this channel's page
    seen = api.anonymous.get(f"/r/{shop.channel.id}/recharges/{recharge_id}?lang=en")
    assert seen.status_code == 200
    assert set(seen.json()) == {"status", "final", "slow", "message"}
    assert seen.json()["message"].startswith(f"Done! {PLAN} has been added to your account")
    assert account not in seen.text
    other = api.top_channel("Another shop")
    assert api.anonymous.get(f"/r/{other.id}/recharges/{recharge_id}").status_code == 404
    assert api.anonymous.get(f"/r/{shop.channel.id}/recharges/nonsense").status_code == 404

    # the next code keeps the account; reloading the page follows the same recharge
    page.get_by_role("button", name="再充值一张卡").click()
    expect(page.get_by_label("兑换码", exact=True)).to_have_value("")
    expect(page.get_by_label("兑换码", exact=True)).to_be_focused()
    expect(page.get_by_label("视频平台账号")).to_have_value(account)
    page.goto(f"{api.base_url}/r/{shop.channel.id}#recharge={recharge_id}")
    page.reload()
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("form")).to_be_hidden()


def test_an_english_phone_gets_the_page_in_english(phone: Phone, api: Api, shop: Shop) -> None:
    from playwright.sync_api import expect

    page = phone.open("en-US")
    open_page(page, api, shop)
    assert page.evaluate("document.documentElement.lang") == "en"
    expect(page).to_have_title(f"Recharge your membership · {SHOP_NAME}")
    expect(page.locator("#language-switch")).to_have_text("中文")
    expect(page.locator("main")).to_contain_text(
        "Add a video membership to your account with the code from your card."
    )
    account = new_account()
    verification_code = send_code(page, api, account, "en")
    fill_and_submit(page, verification_code, shop.code(), "en")
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_role("heading", name="Recharge complete")).to_be_visible()
    until = credited_until(shop, recharge_id_of(page))
    expect(page.locator("#status-message")).to_have_text(
        f"Done! {PLAN} has been added to your account: {PLAN_DAYS} days, "
        f"until {until:%B} {until.day}, {until.year}. Enjoy watching."
    )
    fits_the_phone(page)
    screenshot(page, "en-succeeded")

    # without any Accept-Language, or with languages we do not have: Simplified Chinese
    for header in ({}, {"Accept-Language": "de-DE,fr;q=0.8"}):
        plain = api.anonymous.get(f"/r/{shop.channel.id}", headers=header)
        assert plain.status_code == 200
        assert '<html lang="zh-CN">' in plain.text and "视频平台账号" in plain.text
        assert plain.headers["content-language"] == "zh-CN"
    # the switch's query in any case is remembered; a language we do not have is ignored
    switched = api.anonymous.get(f"/r/{shop.channel.id}?lang=EN")
    assert switched.status_code == 200 and '<html lang="en">' in switched.text
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith("lang=en;") and "Path=/r" in cookie and "HttpOnly" in cookie
    unknown = api.anonymous.get(f"/r/{shop.channel.id}?lang=fr", headers={"Accept-Language": "en"})
    assert unknown.status_code == 200 and '<html lang="en">' in unknown.text
    assert "set-cookie" not in unknown.headers


def test_the_switch_changes_the_language_and_is_remembered(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    open_page(page, api, shop)
    expect(page.get_by_label("视频平台账号")).to_be_visible()
    page.get_by_role("link", name="English").click()
    expect(page.get_by_label("Your account on the video platform")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.url.endswith("?lang=en")
    screenshot(page, "en-switched")

    # remembered: the plain link, on a Chinese phone, is now English
    open_page(page, api, shop)
    expect(page.locator(".eyebrow")).to_have_text("Membership recharge")
    expect(page.get_by_role("link", name="中文")).to_be_visible()

    # and back
    page.get_by_role("link", name="中文").click()
    expect(page.locator(".eyebrow")).to_have_text("会员充值")
    open_page(page, api, shop)
    expect(page.get_by_label("视频平台账号")).to_be_visible()


def test_every_bad_field_is_flagged_at_once(phone: Phone, api: Api, shop: Shop) -> None:
    from playwright.sync_api import expect

    for locale, lang, expected in (
        (
            "zh-CN",
            "zh",
            {
                "form": "请修改下方标出的 3 项。",
                "account": "请输入账号：3 到 64 位字母、数字或 @ . _ + -，通常是您的手机号。",
                "verification": "请输入短信中的 6 位验证码。",
                "code": "兑换码有输入错误，请逐个字符核对。",
                "shape": "兑换码由 20 位字母和数字组成，例如 ABCD-EFGH-JKMN-PQRS-TVWX，请核对。",
            },
        ),
        (
            "en-GB",
            "en",
            {
                "form": "Please correct the 3 fields marked below.",
                "account": "Please enter your account: 3 to 64 letters, digits or @ . _ + -, "
                "usually your mobile number.",
                "verification": "Please enter the 6-digit verification code from the SMS.",
                "code": "That code has a typo — please check each character.",
                "shape": "A recharge code is 20 letters and digits, like "
                "ABCD-EFGH-JKMN-PQRS-TVWX. Please check it.",
            },
        ),
    ):
        page = phone.open(locale)
        posts: list[str] = []
        page.on("request", lambda r, p=posts: p.append(r.url) if r.method == "POST" else None)
        open_page(page, api, shop)
        words = WORDS[lang]
        page.get_by_label(words["account"], exact=True).fill("13 9 00")
        fill_and_submit(page, "12", mistype(shop.codes[-1]), lang)

        expect(page.locator("#form-error")).to_have_text(expected["form"])
        expect(page.locator("#account-error")).to_have_text(expected["account"])
        expect(page.locator("#verification-error")).to_have_text(expected["verification"])
        expect(page.locator("#code-error")).to_have_text(expected["code"])
        for label in ("account", "verification", "code"):
            expect(page.get_by_label(words[label], exact=True)).to_have_attribute(
                "aria-invalid", "true"
            )
        expect(page.get_by_label(words["account"], exact=True)).to_be_focused()
        fits_the_phone(page)
        screenshot(page, f"{lang}-bad-fields")
        assert posts == [], "nothing is sent while a field is bad"

        # fixed one by one, each mark goes; a code of the wrong shape is told so
        page.get_by_label(words["account"], exact=True).fill(new_account())
        fill_and_submit(page, "123456", "ABCD-EFGH", lang)
        expect(page.locator("#code-error")).to_have_text(expected["shape"])
        expect(page.locator("#account-error")).to_be_empty()
        expect(page.locator("#verification-error")).to_be_empty()
        expect(page.locator("#form-error")).to_be_empty()
        expect(page.get_by_label(words["account"], exact=True)).not_to_have_attribute(
            "aria-invalid", "true"
        )
        expect(page.get_by_label(words["code"], exact=True)).to_be_focused()
        assert posts == []

    # the server flags every bad field in one problem too (what the page shows the same way)
    refused = api.anonymous.post(
        "/v1/recharges",
        {"channel_id": shop.channel.id, "account": "13 9 00", "code": "", "verification_code": ""},
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "validation_failed"
    flagged = {error["field"] for error in refused.json()["errors"]}
    assert flagged == {"account", "code", "verification_code"}, refused.text


def test_a_recharge_still_pending_says_what_is_happening_and_what_to_do(
    page: Any, api: Api, shop: Shop, faults: str
) -> None:
    """The platform answers nothing but 503 (its fault switch), so the recharge stays pending;
    past the notice time the page says so, in Chinese and, after the switch, in English."""
    from playwright.sync_api import expect

    open_page(page, api, shop)
    verification_code = send_code(page, api, new_account())
    assert httpx.post(faults, json={"error_rate": 1.0}).status_code == 200
    fill_and_submit(page, verification_code, shop.code())
    status = page.locator("#status-view")
    expect(status).to_have_attribute("data-status", "pending")
    expect(page.locator("#status-message")).to_have_text("正在为您的账号开通会员，通常只需几秒钟。")
    recharge_id = recharge_id_of(page)

    expect(status).to_have_attribute("data-slow", "true")
    expect(page.get_by_role("heading", name="仍在等待平台确认")).to_be_visible()
    expect(page.locator("#status-message")).to_have_text(
        "视频平台尚未确认这笔充值，我们正在持续向平台查询。您的兑换码已为这笔充值保留，"
        "不会被使用两次，您也不会被重复扣费。您可以先关闭本页面：本页地址记录了这笔充值，"
        f"稍后再次打开即可查看结果；也可以向店铺提供充值编号 {recharge_id} 查询。"
    )
    expect(page.locator("#again")).to_be_hidden()
    fits_the_phone(page)
    screenshot(page, "zh-pending-slow")
    pending = shop.channel.get(f"/v1/recharges/{recharge_id}")
    assert pending.json()["status"] == "pending", pending.text

    # the switch keeps following the same recharge
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Still waiting for the platform")).to_be_visible()
    expect(page.locator("#status-message")).to_have_text(
        "The video platform has not confirmed your recharge yet; we keep asking it. Your code "
        "is reserved for this recharge and cannot be used twice, so you will not be charged "
        "twice. You may close this page: its address keeps this recharge, so open it again "
        f"later to see the result, or give the shop your recharge number {recharge_id}."
    )
    assert recharge_id_of(page) == recharge_id
    fits_the_phone(page)
    screenshot(page, "en-pending-slow")


def test_a_used_code_is_told_in_plain_words(page: Any, api: Api, shop: Shop) -> None:
    from playwright.sync_api import expect

    used = shop.code()
    redeem_through_the_api(api, shop, used)
    code = shop.code()
    open_page(page, api, shop)
    verification_code = send_code(page, api, new_account())

    fill_and_submit(page, verification_code, used.lower())
    error = page.locator("#code-error")
    expect(error).to_have_text("该兑换码已被使用，每个兑换码只能使用一次。")
    expect(page.get_by_label("兑换码", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("兑换码", exact=True)).to_be_focused()
    expect(page.locator("#status-view")).to_be_hidden()
    screenshot(page, "zh-code-already-redeemed")

    fill_and_submit(page, verification_code, code)
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")


def test_a_wrong_verification_code_is_told_with_the_tries_left(
    phone: Phone, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    page = phone.open("en-US")
    open_page(page, api, shop)
    right = send_code(page, api, new_account(), "en")
    wrong = f"{(int(right) + 1) % 10**6:06d}"

    fill_and_submit(page, wrong, shop.codes[-1], "en")
    error = page.locator("#verification-error")
    expect(error).to_have_text(
        "That verification code is wrong or has expired. Please check the SMS, or tap "
        "“Send code” for a new one. You have 4 more tries."
    )
    screenshot(page, "en-verification-failed")
    expect(page.get_by_label("Verification code")).to_be_focused()
    expect(page.locator("#code-error")).to_be_empty()

    fill_and_submit(page, right, shop.code(), "en")
    expect(page.locator("#status-view")).to_have_attribute("data-status", "succeeded")


def test_a_refusal_by_the_platform_is_told_and_the_code_can_be_tried_again(
    page: Any, api: Api, shop: Shop, faults: str
) -> None:
    from playwright.sync_api import expect

    account = new_account()
    assert httpx.post(faults, json={"fail_accounts": [account]}).status_code == 200
    open_page(page, api, shop)
    verification_code = send_code(page, api, account)
    code = shop.codes[-1]
    fill_and_submit(page, verification_code, code)
    status = page.locator("#status-view")
    expect(status).to_have_attribute("data-status", "failed")
    expect(page.get_by_role("heading", name="充值失败")).to_be_visible()
    expect(page.locator("#status-message")).to_have_text(
        "视频平台无法为该账号开通会员，请检查账号。您的兑换码未被使用，可以再次尝试。"
    )
    screenshot(page, "zh-failed")
    page.get_by_role("button", name="重试").click()
    expect(page.get_by_label("兑换码", exact=True)).to_have_value(code)
    expect(page.get_by_label("验证码", exact=True)).to_have_value("")
    expect(page.get_by_label("验证码", exact=True)).to_be_focused()


def test_too_many_codes_for_one_account_says_how_long_to_wait(
    page: Any, api: Api, shop: Shop
) -> None:
    from playwright.sync_api import expect

    account = new_account()
    body = {"account": account, "channel_id": shop.channel.id}
    for _ in range(10):  # the page's own sends (same address as the browser) until refused
        reply = api.anonymous.post("/v1/verification-codes", body)
        if reply.status_code != 202:
            break
    assert reply.status_code == 429, reply.text
    open_page(page, api, shop)
    page.get_by_label("视频平台账号").fill(account)
    with page.expect_response(lambda response: "/v1/verification-codes" in response.url) as sent:
        page.get_by_role("button", name="获取验证码").click()
    assert sent.value.status == 429
    retry_after = int(sent.value.headers["retry-after"])
    minutes = -(-retry_after // 60)
    wait = f"{retry_after} 秒" if retry_after < 90 else f"约 {minutes} 分钟"
    expect(page.locator("#form-error")).to_have_text(
        f"获取验证码的次数过多，请等待 {wait} 后再试。"
    )
    expect(page.locator("#send-code")).to_be_disabled()
    screenshot(page, "zh-rate-limited")


def test_an_unknown_channel_has_a_plain_not_found_page(phone: Phone, api: Api) -> None:
    from playwright.sync_api import expect

    for locale, heading, text in (
        ("zh-CN", "页面不存在", "该充值页面不存在。"),
        ("en-US", "Page not found", "This recharge page does not exist."),
    ):
        page = phone.open(locale)
        for ref in (str(uuid.uuid4()), "not-a-channel"):
            reply = page.goto(f"{api.base_url}/r/{ref}")
            assert reply is not None and reply.status == 404
            expect(page.get_by_role("heading", level=1)).to_have_text(heading)
            expect(page.locator("main")).to_contain_text(text)
            expect(page.locator("form")).to_have_count(0)
        screenshot(page, f"{locale[:2]}-not-found")


def test_a_suspended_channel_says_so_and_offers_no_form(page: Any, api: Api) -> None:
    from playwright.sync_api import expect

    paused = api.top_channel("Paused Corner Shop")
    assert api.operator.post(f"/v1/channels/{paused.id}/suspension").status_code in (200, 204)
    reply = page.goto(f"{api.base_url}/r/{paused.id}")
    assert reply is not None and reply.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Paused Corner Shop")
    expect(page.get_by_role("heading", name="暂停充值")).to_be_visible()
    expect(page.locator("#suspended")).to_contain_text(
        "Paused Corner Shop 目前暂停充值。请稍后再试，或联系店铺寻求帮助。"
    )
    expect(page.locator("form")).to_have_count(0)
    screenshot(page, "zh-suspended")
