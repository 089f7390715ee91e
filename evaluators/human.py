"""Human evaluation in LLMZoo's form: win / tie / lose per model pair from arena votes.

Votes use FastChat's winner vocabulary (``model_a``, ``model_b``, ``tie``, ``tie (bothbad)``;
both-bad counts as a tie). Each unordered pair is reported once, from one side's perspective:
the alphabetically first model's, or, with a ``reference``, the other model's against the
reference (only pairs that include it), as LLMZoo reports every model against ChatGPT.
Pure functions over plain tuples: the control plane reads the vote rows and passes them in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
HEADERS = ("model", "opponent", "wins", "ties", "losses", "win rate", "beat rate")


@dataclass(frozen=True)
class HumanPair:
    """``model_a``'s record against ``model_b``: ``win_rate`` = wins / all votes,
    ``beat_rate`` = wins / (wins + losses) (``None`` when every vote was a tie)."""

    model_a: str
    model_b: str
    wins: int
    ties: int
    losses: int
    both_bad: int  # of the ties, those voted "both are bad"
    n: int
    win_rate: float
    beat_rate: float | None


def human_pairs(votes: Iterable[Sequence[str]], *,
                reference: str | None = None) -> list[HumanPair]:
    """Win/tie/lose per unordered model pair from ``(model_a, model_b, winner)`` votes.

    Without ``reference`` every pair that has votes, from its alphabetically first model's
    side; with it, the pairs that include ``reference``, from the other model's side. Votes of
    a model against itself are ignored. Sorted by ``(model_a, model_b)``. An unknown winner
    raises ``ValueError``.
    """
    return tally_pairs(Counter((a, b, w) for a, b, w in votes), reference=reference)


def tally_pairs(tally: Mapping[tuple[str, str, str], int], *,
                reference: str | None = None) -> list[HumanPair]:
    """`human_pairs` of votes already counted per ``(model_a, model_b, winner)`` (as the
    database's ``GROUP BY`` gives them): the work is per group, not per vote."""
    counts: Counter[tuple[str, str, str]] = Counter()  # (first, second, outcome for first)
    for (model_a, model_b, winner), n in tally.items():
        if winner not in WINNERS:
            raise ValueError(f"unknown winner {winner!r}; expected one of {', '.join(WINNERS)}")
        if model_a == model_b:
            continue
        first, second = _oriented(model_a, model_b, reference)
        if winner == "model_a" or winner == "model_b":
            won = (winner == "model_a") == (first == model_a)
            counts[first, second, "win" if won else "loss"] += n
        else:
            counts[first, second, "both_bad" if winner == "tie (bothbad)" else "tie"] += n
    pairs = sorted({(first, second) for first, second, _ in counts})
    if reference is not None:
        pairs = [p for p in pairs if p[1] == reference]
    return [_pair(first, second, counts) for first, second in pairs]


def _oriented(model_a: str, model_b: str, reference: str | None) -> tuple[str, str]:
    if reference is not None and reference in (model_a, model_b):
        return (model_b, model_a) if model_a == reference else (model_a, model_b)
    return (model_a, model_b) if model_a <= model_b else (model_b, model_a)


def _pair(first: str, second: str, counts: Counter[tuple[str, str, str]]) -> HumanPair:
    wins, losses = counts[first, second, "win"], counts[first, second, "loss"]
    both_bad = counts[first, second, "both_bad"]
    ties = counts[first, second, "tie"] + both_bad
    n = wins + ties + losses
    return HumanPair(model_a=first, model_b=second, wins=wins, ties=ties, losses=losses,
                     both_bad=both_bad, n=n, win_rate=wins / n,
                     beat_rate=wins / (wins + losses) if wins + losses else None)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def human_rows(pairs: Iterable[HumanPair]) -> list[list[str | int]]:
    """``pairs`` as table rows under ``HEADERS`` (rates as percentages, "–" when undefined)."""
    return [[p.model_a, p.model_b, p.wins, p.ties, p.losses, _percent(p.win_rate),
             _percent(p.beat_rate)] for p in pairs]
