"""Ratings at scale: aggregated Bradley–Terry + bootstrap beside the per-vote notebook method.

Draws synthetic votes among models with known true ratings (seeded), then times
  (a) ours: `aggregate` + `fit_bt` + `bootstrap` (multinomial resampling of the pair counts)
      on all the votes, and `compute_ratings` end to end (filter, count, fit, intervals, matrices);
  (b) the straightforward method of the Chatbot Arena notebook (`compute_mle_elo`): one
      duplicated row per vote, a ±ln(10) design matrix, scikit-learn's LogisticRegression without
      intercept, the bootstrap by resampling rows with pandas — on a subset of the votes and
      fewer rounds, and ours on that same subset and round count, for a like-for-like ratio;
and reports each method's error to the true ratings and how often the 95% intervals cover them.

Ties: a pair with Bradley–Terry probability p ties with probability 0.6 · min(p, 1 − p) (30% for
equal models; half "tie", half "tie (bothbad)"), taken evenly from both sides' wins, so the
expected score (win + tie / 2) stays p and the true ratings are what both methods estimate.

    .venv/bin/python scripts/bench_ratings.py [--votes 1000000] [--models 50] [--rounds 1000] \\
        [--baseline-votes 100000] [--baseline-rounds 100] [--seed 0] [--no-baseline]

Needs scikit-learn and pandas for (b) (the "bench" extra).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import get_args

import numpy as np
from rich.console import Console
from rich.table import Table

from arena.ratings import Vote, Winner, aggregate, bootstrap, compute_ratings, fit_bt

WINNERS: tuple[Winner, ...] = get_args(Winner)
console = Console(width=120)


def synthetic_votes(n: int, models: int, seed: int) -> tuple[list[Vote], np.ndarray, list[str]]:
    """``n`` votes between uniformly drawn distinct pairs; true ratings ~ N(1000, 150²), mean 1000."""
    rng = np.random.default_rng(seed)
    true = np.sort(rng.normal(1000.0, 150.0, models))[::-1]
    true += 1000.0 - true.mean()
    names = [f"model-{k:02d}" for k in range(models)]
    a = rng.integers(0, models, n)
    b = (a + rng.integers(1, models, n)) % models
    p = 1.0 / (1.0 + 10.0 ** ((true[b] - true[a]) / 400.0))
    tie = 0.6 * np.minimum(p, 1.0 - p)
    u = rng.random(n)
    outcome = np.where(u < p - tie / 2, 0, np.where(u < 1 - tie, 1, 2))
    outcome[(outcome == 2) & (rng.random(n) < 0.5)] = 3
    votes = [
        Vote(names[x], names[y], WINNERS[o], float(k))
        for k, (x, y, o) in enumerate(zip(a.tolist(), b.tolist(), outcome.tolist(), strict=True))
    ]
    return votes, true, names


def compute_mle_elo(df, scale=400, base=10, init_rating=1000):
    """The Chatbot Arena notebook's fit, as published (penalty None, tol 1e-8)."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    models = pd.concat([df["model_a"], df["model_b"]]).unique()
    models = pd.Series(np.arange(len(models)), index=models)
    df = pd.concat([df, df], ignore_index=True)  # duplicate battles
    p, n = len(models.index), df.shape[0]
    x = np.zeros([n, p])
    x[np.arange(n), models[df["model_a"]]] = +math.log(base)
    x[np.arange(n), models[df["model_b"]]] = -math.log(base)
    y = np.zeros(n)  # one A win => two A wins
    y[df["winner"] == "model_a"] = 1.0
    tie_idx = ((df["winner"] == "tie") | (df["winner"] == "tie (bothbad)")).to_numpy(copy=True)
    tie_idx[len(tie_idx) // 2 :] = False  # one tie => one A win + one B win
    y[tie_idx] = 1.0
    # C=inf is scikit-learn >= 1.8's spelling of the notebook's penalty=None
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8)
    lr.fit(x, y)
    return pd.Series(scale * lr.coef_[0] + init_rating, index=models.index)


def run_baseline(votes: list[Vote], names: list[str], rounds: int, seed: int):
    """Point fit + ``rounds`` row-resampling rounds, as the notebook's get_bootstrap_result."""
    import pandas as pd

    df = pd.DataFrame(
        {"model_a": [v.model_a for v in votes], "model_b": [v.model_b for v in votes],
         "winner": [v.winner for v in votes]}
    )  # fmt: skip
    start = time.perf_counter()
    point = compute_mle_elo(df)
    fit_s = time.perf_counter() - start
    rows = []
    start = time.perf_counter()
    for k in range(rounds):
        rows.append(compute_mle_elo(df.sample(frac=1.0, replace=True, random_state=seed + k)))
    boot_s = time.perf_counter() - start
    samples = pd.DataFrame(rows)[names].to_numpy()
    return point[names].to_numpy(), samples, fit_s, boot_s


@dataclass
class Run:
    aggregate_s: float
    fit_s: float
    boot_s: float
    ratings: np.ndarray
    samples: np.ndarray

    @property
    def total_s(self) -> float:
        return self.aggregate_s + self.fit_s + self.boot_s


def ours(votes: list[Vote], rounds: int, seed: int) -> Run:
    start = time.perf_counter()
    counts = aggregate(votes)
    aggregated = time.perf_counter()
    ratings = fit_bt(counts)
    fitted = time.perf_counter()
    samples = bootstrap(counts, rounds=rounds, seed=seed, start=ratings)
    done = time.perf_counter()
    return Run(aggregated - start, fitted - aggregated, done - fitted, ratings, samples)


def errors(ratings: np.ndarray, samples: np.ndarray, true: np.ndarray) -> str:
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    rmse = math.sqrt(float(np.mean((ratings - true) ** 2)))
    covered = float(np.mean((low <= true) & (true <= high)))
    return (
        f"RMSE {rmse:.2f}, max {np.abs(ratings - true).max():.2f} Elo; mean CI width "
        f"{np.mean(high - low):.1f}; CI covers truth for {covered:.0%} of models"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds, ours")
    parser.add_argument("--baseline-votes", type=int, default=100_000)
    parser.add_argument("--baseline-rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the notebook method")
    args = parser.parse_args()

    console.print(f"drawing {args.votes:,} votes among {args.models} models (not timed) ...")
    votes, true, names = synthetic_votes(args.votes, args.models, args.seed)
    models = sorted(names)  # our arrays follow sorted names
    true = true[[names.index(m) for m in models]]

    big = ours(votes, args.rounds, args.seed)
    start = time.perf_counter()
    compute_ratings(votes, rounds=args.rounds, seed=args.seed)
    end_to_end = time.perf_counter() - start
    table = Table(title=f"ours: {args.votes:,} votes, {args.models} models, {args.rounds} rounds")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_row("aggregate", f"{big.aggregate_s:.3f}")
    table.add_row("fit", f"{big.fit_s:.3f}")
    table.add_row("bootstrap", f"{big.boot_s:.3f}")
    table.add_row("[bold]aggregate + fit + bootstrap", f"[bold]{big.total_s:.3f}")
    table.add_row("compute_ratings (+ filter, matrices)", f"{end_to_end:.3f}")
    console.print(table)
    console.print(f"ours, {args.votes:,} votes: " + errors(big.ratings, big.samples, true))
    if args.no_baseline:
        return

    subset = votes[: args.baseline_votes]
    console.print(f"notebook method on {len(subset):,} votes x {args.baseline_rounds} rounds ...")
    point, samples, fit_s, boot_s = run_baseline(subset, models, args.baseline_rounds, args.seed)
    small = ours(subset, args.baseline_rounds, args.seed)
    per_round = {
        "notebook": boot_s / args.baseline_rounds,
        "small": small.boot_s / args.baseline_rounds,
        "big": big.boot_s / args.rounds,
    }
    table = Table(title="per bootstrap round (a fit on one resample)")
    for column in ("method", "votes", "rounds", "fit s", "bootstrap s", "ms / round"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, n, rounds, fit, boot, key in (
        ("notebook (sklearn, rows)", len(subset), args.baseline_rounds, fit_s, boot_s, "notebook"),
        (
            "ours (pair counts)",
            len(subset),
            args.baseline_rounds,
            small.fit_s,
            small.boot_s,
            "small",
        ),
        ("ours (pair counts)", args.votes, args.rounds, big.fit_s, big.boot_s, "big"),
    ):
        table.add_row(method, f"{n:,}", str(rounds), f"{fit:.4f}", f"{boot:.3f}",
                      f"{1000 * per_round[key]:.2f}")  # fmt: skip
    console.print(table)
    console.print(
        f"per-round ratio, same {len(subset):,} votes: notebook / ours = "
        f"[bold]{per_round['notebook'] / per_round['small']:,.0f}x[/bold]; against ours on "
        f"{args.votes:,} votes: [bold]{per_round['notebook'] / per_round['big']:,.0f}x[/bold]"
    )
    console.print(
        f"whole job, {len(subset):,} votes x {args.baseline_rounds} rounds: notebook "
        f"{fit_s + boot_s:.1f} s, ours {small.total_s:.3f} s"
    )
    console.print(f"notebook, {len(subset):,} votes: " + errors(point, samples, true))
    console.print(f"ours, {len(subset):,} votes: " + errors(small.ratings, small.samples, true))
    gap = np.abs(point - small.ratings).max()
    console.print(f"largest difference between the two point estimates: {gap:.4f} Elo")


if __name__ == "__main__":
    main()
