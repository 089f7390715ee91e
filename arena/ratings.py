"""Bradley–Terry ratings from blind pairwise votes, with honest confidence intervals.

Votes are first counted per model pair (``aggregate``), and every fit works on those counts,
so a million votes among 50 models cost a 1,225-pair problem. The model: model i beats model j
with probability ``1 / (1 + base ** ((R_j - R_i) / scale))``; a tie ("tie" or "tie (bothbad)")
counts as half a win to each side. Ratings are reported on the Elo scale (base 10, scale 400)
with mean ``init_rating`` (1000), or shifted so that an anchor model has a fixed rating.

Uncertainty comes from the bootstrap (multinomial resampling of the pair counts, total fixed,
all rounds solved together by Newton's method warm-started at the point estimate) or, faster,
from the sandwich (robust) covariance. A model ranks 1 + the number of models whose interval
lies entirely above its own.

Regularisation: the fit adds ``L2 / 2 · Σ θ_i²`` to the negative log-likelihood, θ being the
natural-log strengths (rating = θ · 400 / ln 10). ``L2 = 1e-6`` is a Gaussian prior with
standard deviation 1,000 nats (≈ 174,000 Elo). It moves a rating the data determine by about
L2 · θ / (Fisher information) — under 0.001 Elo with a few votes per pair, less with more — but
keeps the rating of a model that never lost finite (10–0 against one opponent: 2,460 Elo
above it, where the maximum-likelihood difference is infinite) and centres each disconnected
part of the comparison graph on the mean. Such a rating, and its interval, only say "above
everything it met".
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import optimize, sparse
from scipy.sparse import csgraph
from scipy.special import expit

from arena.errors import ClientError
from arena.ratings_plots import plot_heatmap, plot_ratings

if TYPE_CHECKING:
    from arena.leaderboard import ModelRating, RatingsResult, compute_ratings

__all__ = [
    "ModelRating", "PairCounts", "RatingFilter", "RatingsResult", "Vote", "aggregate", "as_vote",
    "bootstrap", "compute_ratings", "fit_bt", "online_elo", "plot_heatmap", "plot_ratings", "ranks",
    "sandwich_se",
]

logger = logging.getLogger(__name__)

Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]  # FastChat's clean_battle words
WINNERS: frozenset[str] = frozenset(get_args(Winner))
SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0  # the Elo scale
L2 = 1e-6  # prior precision on natural-log strengths; see the module docstring
Anchor = tuple[str, float]  # (model, the rating it is given)
# Newton stops after a step shorter than this (nats; 1 nat ≈ 174 Elo). Convergence is quadratic,
# so the error left is about the square of the last step.
_POINT_TOL, _BOOTSTRAP_TOL = 1e-10, 1e-6
_MAX_STEP = 4.0  # nats: a longer Newton step is shortened to this (guards far starts)
_CHUNK_FLOATS = 2_500_000  # float64s (≈ 20 MB) per batch of bootstrap rounds: ~250 at 50 models


@dataclass(frozen=True, slots=True)
class Vote:
    """One vote, in FastChat's clean_battle vocabulary."""

    model_a: str
    model_b: str
    winner: Winner
    tstamp: float  # unix seconds
    anony: bool = True
    language: str | None = None
    turn: int = 1
    flagged: bool = False  # e.g. the battle revealed a model's identity


def as_vote(row: Any) -> Vote:
    """A `Vote` from a `Vote`, a mapping (extra keys ignored) or any object with those fields."""
    if isinstance(row, Vote):
        return row
    get = row.get if isinstance(row, Mapping) else lambda key, default: getattr(row, key, default)
    try:
        return Vote(
            model_a=_present(get("model_a", None), "model_a"),
            model_b=_present(get("model_b", None), "model_b"),
            winner=_present(get("winner", None), "winner"),
            tstamp=float(_present(get("tstamp", None), "tstamp")),
            anony=bool(get("anony", True)),
            language=get("language", None),
            turn=int(get("turn", 1)),
            flagged=bool(get("flagged", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ClientError(f"not a vote: {row!r} ({exc})") from exc


def _present(value: Any, field: str) -> Any:
    if value is None:
        raise ClientError(f"a vote has no {field!r}", param=field)
    return value


class RatingFilter(BaseModel):
    """Which votes count towards the ratings."""

    model_config = ConfigDict(extra="forbid")

    anonymous_only: bool = Field(
        default=True, description="Only votes cast before the names were shown."
    )
    language: str | None = Field(
        default=None, description="Only votes in this language (case-insensitive); None: all."
    )
    min_turns: int = Field(
        default=1, ge=1, description="Only battles with at least this many turns."
    )
    exclude_flagged: bool = Field(
        default=True, description="Leave out flagged votes (e.g. a model revealed its identity)."
    )
    since: float | None = Field(default=None, description="Only votes at or after (unix s).")
    until: float | None = Field(default=None, description="Only votes before (unix s).")

    @model_validator(mode="after")
    def _ordered(self) -> RatingFilter:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be later than since")
        return self

    def apply(self, votes: Iterable[Any]) -> list[Vote]:
        """The votes (as `Vote`) that pass the filter, in their original order."""
        since = -math.inf if self.since is None else self.since
        until = math.inf if self.until is None else self.until
        lang = None if self.language is None else self.language.casefold()
        return [
            v
            for v in map(as_vote, votes)
            if (v.anony or not self.anonymous_only)
            and (lang is None or (v.language or "").casefold() == lang)
            and v.turn >= self.min_turns
            and not (v.flagged and self.exclude_flagged)
            and since <= v.tstamp < until
        ]


@dataclass(frozen=True, eq=False)
class PairCounts:
    """Vote counts per model pair: ``models`` sorted by name, pairs ``i < j`` (indices)."""

    models: tuple[str, ...]
    i: np.ndarray  # int64 (pairs,)
    j: np.ndarray
    wins_i: np.ndarray  # int64 (pairs,): votes won by models[i]
    wins_j: np.ndarray
    ties: np.ndarray  # "tie" and "tie (bothbad)" together

    @classmethod
    def from_tally(cls, tally: Mapping[tuple[str, str, str], int]) -> PairCounts:
        """From ``{(model_a, model_b, winner): count}``; self-battles carry no information and
        are dropped."""
        unknown = {w for (_, _, w) in tally} - WINNERS
        if unknown:
            raise ClientError(f"unknown winner {sorted(unknown)!r}; use one of {sorted(WINNERS)}")
        tally = {k: c for k, c in tally.items() if k[0] != k[1] and c > 0}
        models = tuple(sorted({m for (a, b, _) in tally for m in (a, b)}))
        index = {m: k for k, m in enumerate(models)}
        table: dict[tuple[int, int], list[int]] = {}
        for (a, b, winner), count in tally.items():
            ia, ib = index[a], index[b]
            cell = table.setdefault((min(ia, ib), max(ia, ib)), [0, 0, 0])
            if winner.startswith("tie"):
                cell[2] += count
            else:
                cell[0 if (winner == "model_a") == (ia < ib) else 1] += count
        keys = sorted(table)
        rows = np.array([(i, j, *table[i, j]) for i, j in keys], dtype=np.int64).reshape(-1, 5)
        return cls(models, *(rows[:, k].copy() for k in range(5)))

    @property
    def battles(self) -> np.ndarray:
        return self.wins_i + self.wins_j + self.ties

    def index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ClientError(f"model {model!r} has no votes here", param="anchor") from None


def aggregate(votes: Iterable[Any]) -> PairCounts:
    """Count votes per unordered model pair (votes: `Vote`, mappings or objects)."""
    return PairCounts.from_tally(
        Counter((v.model_a, v.model_b, v.winner) for v in map(as_vote, votes))
    )


# --- the solver, on natural-log strengths θ (rating = θ · scale / ln base) --------------------


@dataclass(frozen=True, eq=False)
class _Design:
    """The pair structure shared by every fit on the same counts."""

    i: np.ndarray
    j: np.ndarray
    signed: np.ndarray  # (pairs, models): +1 at i, -1 at j
    unsigned: np.ndarray  # |signed|
    cells: np.ndarray  # (models²,): where each Hessian cell comes from, see `_laplacian`
    prior: np.ndarray  # (models, models): Hessian of the L2 prior and the gauge penalty


def _design(counts: PairCounts, l2: float) -> _Design:
    m, p = len(counts.models), len(counts.i)
    signed = np.zeros((p, m))
    signed[np.arange(p), counts.i] = 1.0
    signed[np.arange(p), counts.j] = -1.0
    cells = np.full((m, m), p + m)  # pairs that never met: the trailing 0
    cells[counts.i, counts.j] = cells[counts.j, counts.i] = np.arange(p)
    cells[np.arange(m), np.arange(m)] = p + np.arange(m)
    # A penalty on the mean of each connected part of the graph. The likelihood cannot see those
    # means and the L2 prior already puts them at 0, so the optimum is unchanged; but it turns a
    # near-singular Hessian (curvature L2 only) into a well-conditioned one.
    played = counts.battles > 0
    graph = sparse.coo_matrix((np.ones(played.sum()), (counts.i[played], counts.j[played])), (m, m))
    _, part = csgraph.connected_components(graph, directed=False)
    same = (part[:, None] == part[None, :]).astype(float)
    kappa = max(1.0, counts.battles.sum() / (2 * max(m, 1)))  # ≈ a model's curvature
    gauge = kappa * same / same.sum(axis=1, keepdims=True) if m else same
    return _Design(
        counts.i, counts.j, signed, np.abs(signed), cells.ravel(), gauge + l2 * np.eye(m)
    )


def _laplacian(w: np.ndarray, d: _Design) -> np.ndarray:
    """Σ_pairs w · (e_i − e_j)(e_i − e_j)ᵀ, batched over the leading axes of ``w``."""
    m = d.signed.shape[1]
    values = np.concatenate([-w, w @ d.unsigned, np.zeros((*w.shape[:-1], 1))], axis=-1)
    return np.take(values, d.cells, axis=-1).reshape(*w.shape[:-1], m, m)


def _objective(
    theta: np.ndarray, s: np.ndarray, n: np.ndarray, d: _Design
) -> tuple[float, np.ndarray]:
    """Penalised negative log-likelihood and its gradient, per battle (for L-BFGS)."""
    diff = theta[d.i] - theta[d.j]
    prior_theta = d.prior @ theta
    nll = s @ np.logaddexp(0.0, -diff) + (n - s) @ np.logaddexp(0.0, diff)
    value = nll + 0.5 * theta @ prior_theta
    grad = prior_theta - (s - n * expit(diff)) @ d.signed
    total = max(float(n.sum()), 1.0)
    return float(value) / total, grad / total


def _newton(theta: np.ndarray, s: np.ndarray, n: np.ndarray, d: _Design, tol: float) -> np.ndarray:
    """Solve R problems at once (rows of ``s``, ``n``) by Newton's method from ``theta`` (R, M).
    A row still moving after 50 steps (never seen; a guard) is restarted with L-BFGS."""
    theta = theta.copy()
    active = _newton_steps(theta, s, n, d, np.arange(len(theta)), tol)
    for r in active:
        logger.warning("Bradley–Terry: Newton did not converge on row %d; trying L-BFGS", r)
        theta[r] = _lbfgs(theta[r], s[r], n[r], d)
        if len(_newton_steps(theta, s, n, d, np.array([r]), tol)):
            logger.warning("Bradley–Terry: row %d did not converge; using the last iterate", r)
    return theta


def _newton_steps(
    theta: np.ndarray, s: np.ndarray, n: np.ndarray, d: _Design, active: np.ndarray, tol: float
) -> np.ndarray:
    """Up to 50 Newton steps on rows ``active`` of ``theta`` (in place); the rows left moving."""
    for _ in range(50):
        if not len(active):
            break
        th, sa, na = theta[active], s[active], n[active]
        p = expit(th @ d.signed.T)
        grad = th @ d.prior - (sa - na * p) @ d.signed
        hess = _laplacian(na * p * (1.0 - p), d) + d.prior
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        size = np.abs(step).max(axis=1)
        theta[active] = th - step * np.minimum(1.0, _MAX_STEP / np.maximum(size, 1e-300))[:, None]
        active = active[size >= tol]
    return active


def _lbfgs(start: np.ndarray, s: np.ndarray, n: np.ndarray, d: _Design) -> np.ndarray:
    found = optimize.minimize(
        _objective,
        start,
        args=(s, n, d),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15},
    )
    return np.asarray(found.x)


def _fit_theta(counts: PairCounts, d: _Design) -> np.ndarray:
    """Point estimate: L-BFGS (scipy) from zero, then Newton to full precision."""
    s = counts.wins_i + 0.5 * counts.ties
    n = counts.battles.astype(float)
    start = _lbfgs(np.zeros(len(counts.models)), s, n, d)
    return _newton(start[None], s[None], n[None], d, _POINT_TOL)[0]


def _to_elo(
    theta: np.ndarray,
    counts: PairCounts,
    scale: float,
    base: float,
    init: float,
    anchor: Anchor | None,
) -> np.ndarray:
    ratings = theta * (scale / math.log(base))
    ratings = ratings - ratings.mean(axis=-1, keepdims=True)
    if anchor is None:
        return ratings + init
    k = counts.index(anchor[0])
    return ratings + (anchor[1] - ratings[..., k : k + 1])


def _to_theta(ratings: np.ndarray, scale: float, base: float) -> np.ndarray:
    theta = np.asarray(ratings, dtype=float) * (math.log(base) / scale)
    return theta - theta.mean()


_BLAS_LOCK = threading.RLock()  # the BLAS thread limit is process-wide: one setter at a time


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # correct without it, only slower on busy cores
        return None
    return ThreadpoolController()


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _one_blas_thread(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run ``fn`` with single-threaded BLAS. These problems are many small ones, and BLAS
    threads (numpy and scipy each bring an OpenBLAS pool) only fight over the cores: on 2 busy
    cores a fit took 100 ms threaded and 3 ms on one thread."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        controller = _blas_controller()
        if controller is None:
            return fn(*args, **kwargs)
        with _BLAS_LOCK, controller.limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@_one_blas_thread
def fit_bt(
    counts: PairCounts,
    *,
    scale: float = SCALE,
    base: float = BASE,
    init_rating: float = INIT_RATING,
    anchor: Anchor | None = None,
    l2: float = L2,
) -> np.ndarray:
    """Maximum-likelihood Bradley–Terry ratings (Elo scale), aligned with ``counts.models``:
    mean ``init_rating``, or shifted so ``anchor[0]`` is rated ``anchor[1]``."""
    if not counts.models:
        return np.zeros(0)
    theta = _fit_theta(counts, _design(counts, l2))
    return _to_elo(theta, counts, scale, base, init_rating, anchor)


@_one_blas_thread
def bootstrap(
    counts: PairCounts,
    *,
    rounds: int = 1000,
    seed: int = 0,
    scale: float = SCALE,
    base: float = BASE,
    init_rating: float = INIT_RATING,
    anchor: Anchor | None = None,
    l2: float = L2,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Ratings refitted on ``rounds`` multinomial resamples of the pair counts (the total number
    of votes fixed): an array (rounds, models). Deterministic given ``seed``. ``start``: the
    point-estimate ratings if already computed (each round is warm-started from them)."""
    m, p = len(counts.models), len(counts.i)
    if rounds < 1:
        raise ClientError("bootstrap needs at least one round", param="rounds")
    if m == 0:
        return np.zeros((rounds, 0))
    d = _design(counts, l2)
    theta0 = _fit_theta(counts, d) if start is None else _to_theta(start, scale, base)
    table = np.concatenate([counts.wins_i, counts.wins_j, counts.ties])
    total = int(table.sum())
    if total == 0:
        return np.tile(_to_elo(theta0, counts, scale, base, init_rating, anchor), (rounds, 1))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_FLOATS // (m * m + 6 * p))
    out = np.empty((rounds, m))
    for lo in range(0, rounds, chunk):
        draw = rng.multinomial(total, table / total, size=min(chunk, rounds - lo)).astype(float)
        wins_i, wins_j, ties = draw[:, :p], draw[:, p : 2 * p], draw[:, 2 * p :]
        start_rows = np.broadcast_to(theta0, (len(draw), m))
        s, n = wins_i + 0.5 * ties, wins_i + wins_j + ties
        out[lo : lo + len(draw)] = _newton(start_rows, s, n, d, _BOOTSTRAP_TOL)
    return _to_elo(out, counts, scale, base, init_rating, anchor)


@_one_blas_thread
def sandwich_se(
    counts: PairCounts,
    ratings: np.ndarray,
    *,
    scale: float = SCALE,
    base: float = BASE,
    anchor: Anchor | None = None,
    l2: float = L2,
) -> np.ndarray:
    """Robust (sandwich) standard errors of ``ratings`` on the Elo scale: H⁻¹ · Σ score scoreᵀ
    · H⁻¹, per vote. Without an anchor, of each rating relative to the mean; with one, relative
    to the anchor (whose own error is then 0). A 95% interval is ±1.96 se."""
    m = len(counts.models)
    if m == 0:
        return np.zeros(0)
    d = _design(counts, l2)
    theta = _to_theta(ratings, scale, base)
    p = expit(theta[d.i] - theta[d.j])
    hess = _laplacian(counts.battles * p * (1.0 - p), d) + d.prior
    # Σ over the votes of a pair of (outcome − p)², outcome 1 / 0 / ½ for a win / loss / tie
    meat = _laplacian(
        counts.wins_i * (1 - p) ** 2 + counts.wins_j * p**2 + counts.ties * (0.5 - p) ** 2, d
    )
    bread = np.linalg.inv(hess)
    cov = bread @ meat @ bread
    if anchor is not None:
        shift = np.eye(m) - np.outer(np.ones(m), np.eye(m)[counts.index(anchor[0])])
        cov = shift @ cov @ shift.T
    return np.sqrt(np.clip(np.diag(cov), 0.0, None)) * (scale / math.log(base))


def online_elo(
    votes: Iterable[Any],
    *,
    k: float = 4,
    scale: float = SCALE,
    base: float = BASE,
    init: float = INIT_RATING,
) -> dict[str, float]:
    """Sequential Elo in time order, as in the Chatbot Arena notebook (for reference only: it
    depends on the order of the votes and forgets nothing)."""
    rating: dict[str, float] = {}
    for v in sorted(map(as_vote, votes), key=lambda v: v.tstamp):
        if v.winner not in WINNERS:
            raise ClientError(f"unknown winner {v.winner!r}", param="winner")
        ra, rb = rating.get(v.model_a, init), rating.get(v.model_b, init)
        expected_a = 1 / (1 + base ** ((rb - ra) / scale))
        score_a = {"model_a": 1.0, "model_b": 0.0}.get(v.winner, 0.5)
        rating[v.model_a] = ra + k * (score_a - expected_a)
        rating[v.model_b] = rating.get(v.model_b, init) + k * (expected_a - score_a)
    return rating


def ranks(ci_low: np.ndarray, ci_high: np.ndarray) -> np.ndarray:
    """1 + the number of models whose interval lies entirely above each model's."""
    low, high = np.asarray(ci_low), np.asarray(ci_high)
    return 1 + (low[None, :] > high[:, None]).sum(axis=1)


# The leaderboard (rows, matrices, `compute_ratings`) lives in `arena.leaderboard`, which imports
# this module; its names are re-exported lazily so that `from arena.ratings import …` still works.
_LEADERBOARD_NAMES = frozenset({"ModelRating", "RatingsResult", "compute_ratings"})


def __getattr__(name: str) -> Any:
    if name in _LEADERBOARD_NAMES:
        from arena import leaderboard

        return getattr(leaderboard, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
