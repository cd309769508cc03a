"""The trending page: its repository cards parsed, and the options it can be asked for.

The page has no API, so its HTML is parsed (selectolax, the lexbor HTML5 parser): one
`<article class="Box-row">` card per repository, the repository link in the card's heading at
any level (`h1` in 2019-2020 pages, `h2` today). GitHub changes that markup from time to time;
a page that yields no repository sends the client to the Search API (`client`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from repovault_pipeline.core.common.settings import TRENDING_PERIODS

SINCE_CHOICES = TRENDING_PERIODS
# Every character of a language name in GitHub's menu (github-linguist's languages.yml):
# letters, digits, space and # ' ( ) * + - . (C#, Cap'n Proto, Graphviz (DOT), F*, C++).
_LANGUAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 #'()*+._-]{0,49}$")
# Characters a URL path segment may carry as they are (RFC 3986 pchar); '#' and '%' are escaped.
_PATH_SAFE = "-._~!$&'()*+,;=:@"
# Menu entries that are not a linguist language name.
_MENU_SLUGS = {"unknown languages": "unknown"}
REPO_PATH = re.compile(r"^/?(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)/?$")
_COUNT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([kKmM]?)")
_MULTIPLIER = {"": 1, "k": 1_000, "m": 1_000_000}
_HEADING_LINK = ", ".join(f"h{level} a[href]" for level in range(1, 7))
log = logging.getLogger(__name__)


class InvalidTrendingOption(ValueError):
    """A language or period the trending page cannot be asked for (bad input, not a failure)."""


@dataclass(frozen=True)
class TrendingRepo:
    """One entry of the list, as GitHub shows it."""

    owner: str
    name: str
    description: str | None = None
    language: str | None = None
    stars: int | None = None
    stars_in_period: int | None = None  # None from the Search API, which has no such figure

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"


@dataclass(frozen=True)
class TrendingPage:
    """The repository cards of a page in page order, and the positions of the cards whose
    repository link could not be read (a markup change shows there before it empties the list)."""

    repos: tuple[TrendingRepo, ...]
    cards: int
    unreadable: tuple[int, ...] = ()


def parse_trending_page(html: str) -> TrendingPage:
    """The `article.Box-row` cards of a trending page: the repository link is the first link in
    the card's heading, whatever its level; description, language and counts where present."""
    repos: list[TrendingRepo] = []
    unreadable: list[int] = []
    cards = LexborHTMLParser(html).css("article.Box-row")
    for position, card in enumerate(cards, start=1):
        link = card.css_first(_HEADING_LINK)
        href = (link.attributes.get("href") or "") if link is not None else ""
        match = REPO_PATH.match(_url_path(href.strip()))
        if not match:
            log.warning("trending card #%d has no readable repository link; skipped", position)
            unreadable.append(position)
            continue
        repos.append(
            TrendingRepo(
                owner=match["owner"],
                name=match["name"],
                description=_text(card.css_first("p.col-9")),
                language=_text(card.css_first('span[itemprop="programmingLanguage"]')),
                stars=parse_count(_text(card.css_first('a[href$="/stargazers"]'))),
                stars_in_period=parse_count(
                    _text(card.css_first("span.d-inline-block.float-sm-right"))
                ),
            )
        )
    return TrendingPage(tuple(repos), len(cards), tuple(unreadable))


def _url_path(href: str) -> str:
    """The path of a link; empty for one that is not a URL at all (`http://[x`)."""
    try:
        return urlsplit(href).path
    except ValueError:
        return ""


def _text(node: LexborNode | None) -> str | None:
    """A node's text with white space folded; None for a missing or empty node."""
    if node is None:
        return None
    text = " ".join((node.text(deep=True, separator=" ") or "").split())
    return text or None


def parse_count(text: str | None) -> int | None:
    """The first count in `text` as GitHub writes them: `1,234`, `12.3k`, `1.2m`."""
    match = _COUNT.search(text or "")
    if not match:
        return None
    number, suffix = match.group(1).replace(",", ""), match.group(2).lower()
    return round(float(number) * _MULTIPLIER[suffix])


def check_since(since: str) -> str:
    value = (since or "").strip().lower()
    if value not in SINCE_CHOICES:
        raise InvalidTrendingOption(f"since={since!r} is not one of {', '.join(SINCE_CHOICES)}")
    return value


def check_language(language: str | None) -> str | None:
    """A language name as GitHub's menu lists it (Python, C++, C#, Cap'n Proto, F*), or None."""
    if language is None or not language.strip():
        return None
    value = language.strip()
    if not _LANGUAGE.match(value):
        raise InvalidTrendingOption(
            f"language {value[:60]!r} is not a language name; use the name GitHub's language "
            "menu shows (letters, digits, spaces and # ' ( ) * + - .)"
        )
    return value


def language_slug(language: str) -> str:
    """GitHub's URL slug of a language: linguist's default alias (lowercase, each white space
    a '-') with what a path segment cannot carry escaped: `C#` -> `c%23`, `Cap'n Proto` ->
    `cap'n-proto`, `Graphviz (DOT)` -> `graphviz-(dot)`."""
    name = " ".join(language.split()).lower()
    return _MENU_SLUGS.get(name) or quote(name.replace(" ", "-"), safe=_PATH_SAFE)


def trending_page_url(base: str, language: str | None) -> str:
    """`<trending url>[/<language slug>]`."""
    language = check_language(language)
    if not language:
        return base.rstrip("/")
    return f"{base.rstrip('/')}/{language_slug(language)}"
