"""The recharge page's languages: Simplified Chinese by default, English when asked for.

Every word an end user reads is in the templates (`templates/*.html`, `templates/*.txt`), marked
for gettext (`_()`, `{% trans %}`), and translated in the message catalogue
`locale/zh_Hans/LC_MESSAGES/messages.po`; English is the catalogues' source language. The
`.po` file is the only thing kept: it is compiled with Babel the first time a language is used,
so a fresh install, CI and an editable checkout all get the same catalogue without a build step.

The language of a request, first found wins: `?lang=zh|en` (the page's visible switch, which
also sets the `lang` cookie), the `lang` cookie, then `Accept-Language` (q-values respected;
any `zh-*` is served in Simplified Chinese); anything else gets Simplified Chinese.

Dates are written the reader's way by Babel (`2027年1月2日`, `January 2, 2027`), in China's time
(UTC+8, no daylight saving), the time of the channels' end users.
"""

from __future__ import annotations

import gettext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from io import BytesIO
from pathlib import Path

import jinja2
from babel import Locale
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
TEMPLATES = Path(__file__).resolve().parent / "templates"
DOMAIN = "messages"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
END_USER_TIME = timezone(timedelta(hours=8), "UTC+8")


@dataclass(frozen=True)
class Language:
    code: str
    """What `?lang=` and the cookie say."""
    tag: str
    """The page's `<html lang>`."""
    locale: str
    """Babel's locale: dates, the language's own name."""
    catalogue: str | None
    """The directory under `locale/` of its catalogue; None for the source language."""

    @property
    def own_name(self) -> str:
        """The language's name in itself (from CLDR), shown on the switch to it."""
        parsed = Locale.parse(self.locale)
        return str(parsed.get_language_name(parsed) or self.code)


LANGUAGES = {
    "zh": Language("zh", "zh-CN", "zh_Hans_CN", "zh_Hans"),
    "en": Language("en", "en", "en", None),
}
DEFAULT = "zh"


def choose(asked: str | None, cookie: str | None, accept_language: str | None) -> Language:
    """The language of a request: `?lang=`, then the cookie, then Accept-Language."""
    for wanted in (asked, cookie):
        if wanted in LANGUAGES:
            return LANGUAGES[wanted]
    return LANGUAGES[accepted(accept_language or "")]


def accepted(header: str) -> str:
    """The code of the most preferred language we have in an Accept-Language header (RFC 9110:
    a q-value of 0 means "not acceptable"; ties keep the header's order), else the default."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:32]):
        tag, _, parameters = part.strip().partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked.append((-quality, index, tag.strip().lower()))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            break
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return DEFAULT
    return DEFAULT


@cache
def translations(code: str) -> gettext.NullTranslations:
    """The language's catalogue, compiled from its `.po` file in memory (fuzzy entries left
    out); the source language translates nothing."""
    language = LANGUAGES[code]
    if language.catalogue is None:
        return gettext.NullTranslations()
    source = LOCALE_DIR / language.catalogue / "LC_MESSAGES" / f"{DOMAIN}.po"
    with source.open("rb") as po:
        catalog = read_po(po, locale=language.catalogue, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@cache
def environment(code: str) -> jinja2.Environment:
    """The templates in one language: `.html` autoescaped, `.txt` (plain messages) not."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(code), newstyle=True)  # type: ignore[attr-defined]
    return env


def long_date(moment: datetime, language: Language) -> str:
    """The day `moment` falls on for the end user, written in the reader's language."""
    return format_date(moment.astimezone(END_USER_TIME).date(), "long", locale=language.locale)
