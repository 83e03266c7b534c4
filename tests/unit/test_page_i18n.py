"""The recharge page's languages: the catalogue covers every text of the templates, the
language of a request is chosen as documented, and the texts come out in that language."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from api import i18n

TEMPLATES = sorted(
    path for path in i18n.TEMPLATES.iterdir() if path.suffix in (".html", ".txt")
)
CATALOGUE = i18n.LOCALE_DIR / "zh_Hans" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\(\w+\)s|\{\w+\}")


def extracted() -> set[str]:
    """Every msgid the templates mark for translation (singulars and plurals)."""
    ids: set[str] = set()
    for template in TEMPLATES:
        found = extract_from_file(
            "jinja2.ext:babel_extract", str(template), options={"trimmed": "true"}
        )
        for _, message, _, _ in found:
            ids.update([message] if isinstance(message, str) else [m for m in message if m])
    return ids


def catalogue() -> dict[str, Any]:
    with CATALOGUE.open("rb") as po:
        return {
            (m.id if isinstance(m.id, str) else m.id[0]): m for m in read_po(po) if m.id
        }


def test_the_templates_have_texts_to_translate() -> None:
    assert {path.name for path in TEMPLATES} >= {"recharge.html", "recharge_status.txt"}
    ids = extracted()
    assert "Your account on the video platform" in ids
    assert len(ids) > 50


def test_every_text_of_the_templates_is_translated_and_nothing_else() -> None:
    messages = catalogue()
    wanted = extracted()
    singular = {key for key in wanted if key in messages}
    missing = {key for key in wanted if key not in messages} - {
        m.id[1] for m in messages.values() if not isinstance(m.id, str)
    }
    assert not missing, f"not in {CATALOGUE.name}: {sorted(missing)}"
    obsolete = set(messages) - wanted
    assert not obsolete, f"in the catalogue, in no template: {sorted(obsolete)}"
    for key in singular:
        message = messages[key]
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        assert all(strings), f"untranslated: {key!r}"
        assert "fuzzy" not in message.flags, f"fuzzy: {key!r}"
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == set(PLACEHOLDER.findall(key)), (key, string)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "zh"),
        ("", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-GB;q=0.5, zh-TW;q=0.8", "zh"),
        ("fr-FR, en;q=0.7, zh;q=0.3", "en"),
        ("de, fr;q=0.5", "zh"),
        ("en;q=0, *;q=0.1", "zh"),
        ("EN", "en"),
        ("en;q=bogus, zh;q=0.2", "zh"),
        ("*", "zh"),
    ],
)
def test_accept_language_picks_the_most_preferred_language_we_have(
    header: str | None, code: str
) -> None:
    assert i18n.choose(None, None, header).code == code


def test_the_switch_beats_the_cookie_which_beats_the_header() -> None:
    assert i18n.choose("en", "zh", "zh-CN").code == "en"
    assert i18n.choose(None, "en", "zh-CN").code == "en"
    assert i18n.choose("xx", "zh", "en").code == "zh"
    assert i18n.choose("xx", "yy", "en").code == "en"


def test_each_language_names_itself_for_the_switch() -> None:
    assert i18n.LANGUAGES["zh"].own_name == "中文"
    assert i18n.LANGUAGES["en"].own_name == "English"


def test_dates_are_the_end_users_day_written_their_way() -> None:
    late_evening_utc = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # already 2027 in Beijing
    assert i18n.long_date(late_evening_utc, i18n.LANGUAGES["zh"]) == "2027年1月1日"
    assert i18n.long_date(late_evening_utc, i18n.LANGUAGES["en"]) == "January 1, 2027"


def page(code: str, **context: Any) -> str:
    language = i18n.LANGUAGES[code]
    other = i18n.LANGUAGES["en" if code == "zh" else "zh"]
    template = i18n.environment(code).get_template("recharge.html")
    return template.render(nonce="n", language=language, other=other, base="", **context)


def test_the_page_comes_out_in_each_language_escaped() -> None:
    shop = SimpleNamespace(id="c1", name="Lotus <b>&</b>")
    chinese = page("zh", channel=shop, suspended=False)
    assert '<html lang="zh-CN">' in chinese
    assert "视频平台账号" in chinese and "Your account on the video platform" not in chinese
    assert ">English</a>" in chinese and 'href="?lang=en"' in chinese
    assert "Lotus &lt;b&gt;&amp;&lt;/b&gt;" in chinese and "<b>&</b>" not in chinese
    english = page("en", channel=shop, suspended=False)
    assert '<html lang="en">' in english
    assert "Your account on the video platform" in english and "视频平台账号" not in english
    assert ">中文</a>" in english and 'href="?lang=zh"' in english
    # the script's texts: a JSON dict, in the page's language, safe inside <script>
    texts = re.search(r'<script type="application/json" id="page-texts">(.*?)</script>', chinese)
    assert texts is not None and "<" not in texts.group(1)
    assert json.loads(texts.group(1))["code_malformed"] == "兑换码有输入错误，请逐个字符核对。"
    assert "<h1>页面不存在</h1>" in page("zh", channel=None, suspended=False)


def status(code: str, **context: Any) -> str:
    values = {
        "status": "pending",
        "slow": False,
        "recharge_id": "r-1",
        "failure": None,
        "plan": None,
        "days": None,
        "until": None,
    } | context
    template = i18n.environment(code).get_template("recharge_status.txt")
    return template.render(**values).strip()


def test_the_status_messages_name_the_plan_the_period_and_the_wait() -> None:
    done = {"status": "succeeded", "plan": "爱奇艺黄金会员 月卡", "days": 31}
    done["until"] = "2027年1月2日"
    assert status("zh", **done) == (
        "充值成功！已为您的账号开通「爱奇艺黄金会员 月卡」，共 31 天，"
        "有效期至 2027年1月2日。祝您观影愉快。"
    )
    assert status("en", **done | {"days": 1, "until": "January 2, 2027"}) == (
        "Done! 爱奇艺黄金会员 月卡 has been added to your account: 1 day, until January 2, 2027. "
        "Enjoy watching."
    )
    assert "31 days. Enjoy" in status("en", **done | {"until": None})
    slow = status("zh", slow=True, recharge_id="0f0e")
    assert "尚未确认" in slow and "0f0e" in slow and "不会被重复扣费" in slow
    assert status("en") == (
        "We are adding the membership to your account. This usually takes a few seconds."
    )
    assert status("en", status="failed", failure="account_not_eligible").startswith(
        "The video platform cannot add a membership to this account."
    )
    assert status("zh", status="failed", failure="other").startswith("视频平台未能开通会员")


def test_nothing_in_the_templates_is_left_untranslated_in_chinese() -> None:
    """No run of English words outside tags, attributes, the script and the CSS."""
    shop = SimpleNamespace(id="c1", name="浦东店")
    for suspended in (False, True):
        html = page("zh", channel=shop, suspended=suspended)
        html = html.replace(">English</a>", "></a>")  # the switch names English in English
        visible = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
        visible = re.sub(r"<[^>]+>", " ", visible)
        english = re.findall(r"\b[A-Za-z]{3,}(?:\s+[A-Za-z]{3,})+", visible)
        assert not [words for words in english if words not in ("ABCD",)], english


def test_the_catalogue_is_the_one_packaged() -> None:
    """pyproject's package data ships the .po files the page reads."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert '"locale/*/LC_MESSAGES/*.po"' in pyproject.read_text()
    assert CATALOGUE.is_relative_to(Path(i18n.__file__).parent)
