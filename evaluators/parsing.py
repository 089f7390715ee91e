"""Robust parsers for judge replies. Each returns ``None`` when the reply does not hold a
well-formed, in-range result: the caller stores the raw text, counts it and leaves it out."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

Verdict = Literal["A", "B", "C"]
SCORE_MIN, SCORE_MAX = 1.0, 10.0

_NUM = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = re.compile(r"(\d)\s*(?:/\s*10(?:\.0+)?|out\s+of\s+10|分)(?!\d)", re.IGNORECASE)
_LABELLED = {
    n: re.compile(rf"(?:assistant|助手|模型|回答)\s*{n}(?!\d)[^0-9\n]{{0,25}}?{_NUM}",
                  re.IGNORECASE)
    for n in (1, 2)
}
_PAIR_LINE = re.compile(rf"^\W*(?:scores?\s*:?)?\s*{_NUM}\s*(?:[,;|&]|and|vs\.?)?\s*{_NUM}\W*$",
                        re.IGNORECASE)
_VERDICT = re.compile(r"\[\[\s*(?:assistant\s*)?(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_RATING = re.compile(rf"\[\[\s*{_NUM}\s*(?:/\s*10)?\s*\]\]")
_RATING_BACKUP = (re.compile(rf"\[\s*{_NUM}\s*(?:/\s*10)?\s*\]"),
                  re.compile(rf"rating\s*:?\s*{_NUM}", re.IGNORECASE))


def normalize(text: str) -> str:
    """NFKC (full-width digits and CJK punctuation ``，：；`` become ASCII), ``、`` as a comma."""
    return unicodedata.normalize("NFKC", text).replace("、", ",").replace("\u3000", " ")


def _score(value: str) -> float | None:
    score = float(value)
    return score if SCORE_MIN <= score <= SCORE_MAX else None


def _pair(first: str, second: str) -> tuple[float, float] | None:
    a, b = _score(first), _score(second)
    return (a, b) if a is not None and b is not None else None


def _pure_pair(line: str) -> re.Match[str] | None:
    return _PAIR_LINE.match(_OUT_OF_TEN.sub(r"\1", line).strip())


def parse_pair_scores(text: str) -> tuple[float, float] | None:
    """Assistant 1's and Assistant 2's scores (1–10).

    Tried in order: the first non-empty line holding just two scores (the contract: ``8 7``,
    ``8/10 7/10``, ``8, 7``, ``8，7``); labelled scores anywhere (``Assistant 1: 8, Assistant
    2: 7``, ``助手1：8分``); any other line holding just two scores. A score out of range
    makes the whole reply unparseable.
    """
    lines = [line for line in normalize(text).splitlines() if line.strip()]
    if not lines:
        return None
    first = _pure_pair(lines[0])
    if first:
        return _pair(first.group(1), first.group(2))
    joined = "\n".join(lines)
    one, two = _LABELLED[1].search(joined), _LABELLED[2].search(joined)
    if one and two:
        return _pair(one.group(1), two.group(1))
    for line in lines[1:]:
        match = _pure_pair(line)
        if match:
            return _pair(match.group(1), match.group(2))
    return None


def parse_verdict(text: str) -> Verdict | None:
    """``"A"``, ``"B"`` or ``"C"`` (tie) from ``[[A]]``/``[[B]]``/``[[C]]`` (``[[tie]]`` is
    ``C``); ``None`` when there is none or the reply gives conflicting verdicts."""
    found = {m.upper() for m in _VERDICT.findall(normalize(text))}
    found = {"C" if v == "TIE" else v for v in found}
    if len(found) != 1:
        return None
    verdict = found.pop()
    if verdict == "A":
        return "A"
    return "B" if verdict == "B" else "C"


def parse_rating(text: str) -> float | None:
    """The rating (1–10) from ``[[8]]`` (also ``[[8/10]]``, then ``[8]`` or ``Rating: 8`` as
    fallbacks); ``None`` when absent, conflicting or out of range."""
    norm = normalize(text)
    for pattern in (_RATING, *_RATING_BACKUP):
        values = {float(v) for v in pattern.findall(norm)}
        if len(values) > 1:
            return None
        if values:
            return _score(str(values.pop()))
    return None
