"""The one paired test behind every p-value, interval and non-inferiority bound the sweep report and the suite
verdicts print.

Pairs are queries. A row's difference to another is the macro average over datasets of the mean per-query
difference, each query's difference weighted 1 / (datasets x queries of its dataset); a row with several
seeds pairs its per-query values averaged over its seeds.

**randomization** (the default): the sign-flip randomization test of the mean difference. Its interval is the
test inverted: the shifts d that the same test, run on (differences - d), does not reject. So the 95% interval
holds 0 exactly when p >= 0.05, and the ends of the 90% interval are the one-sided 95% bounds of the
non-inferiority verdict. Each sign pattern "counts" at a shift d when its flipped mean is at least as far from
d as the observed mean is; that set of shifts is an interval around the observed mean, found in closed form, so
the whole inversion costs one pass over the patterns.

- Exact when the distinct sign patterns number at most EXACT_PATTERNS: tied differences (zeros among them)
  are enumerated by how many of each tie flip, weighted by the binomial count, so 300 queries with 290 zero
  differences are as exact as 10 queries. Otherwise RESAMPLES random patterns drawn with FLIP_SEED plus the
  observed one (every comparison of n queries uses the same patterns): the Monte Carlo standard error of a
  p-value near 0.05 is sqrt(0.05 x 0.95 / RESAMPLES) = 0.0015.
- A row with several seeds: each pattern also adds a draw of the seed noise, the row's seed standard error
  (of its k per-seed macro means) times a t(k - 1) variate, independent per row. Few seeds are too few for any
  resampling of them to reach the tails of their noise (3 seeds have 8 sign patterns), so their part is the t
  distribution their spread implies; those rows are then always Monte Carlo. The interval and p cover seeds
  and queries, and err wide: the seed spread also holds query noise the query part counts again.

**t**: the paired t-test, its interval and bounds from the same t distribution; with several seeds the
standard error adds the seeds' (Welch-Satterthwaite degrees of freedom).

scipy.stats.permutation_test runs one test per call; inverting it would take one call per candidate shift,
so the patterns are drawn here (tests check the p-values against scipy's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

ALPHA = 0.05
EXACT_PATTERNS = 2 ** 17
RESAMPLES = 20_000
FLIP_SEED = 20
MONTE_CARLO_ERROR = math.sqrt(ALPHA * (1 - ALPHA) / RESAMPLES)

ByQuery = dict[str, dict[str, float]]  # dataset -> query id -> value
Runs = Sequence[ByQuery]  # one ByQuery per seed


@dataclass(frozen=True)
class Comparison:
    diff: float
    ci_low: float  # 95% two-sided
    ci_high: float
    p: float
    lower_bound: float  # one-sided 95% bounds (the 90% interval's ends), for the non-inferiority verdict
    upper_bound: float
    queries: int
    query_half_width: float  # the 95% half-width of the query noise alone
    seed_half_width: float = math.nan  # ... of the seed noise alone; NaN when neither row has several seeds
    exact: bool = True  # every sign pattern enumerated (randomization) or a closed form (t)
    p_adjusted: float = math.nan
    in_family: bool = False

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA


# --- the paired data ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Paired:
    differences: np.ndarray  # per query, weighted so that their mean is the macro-averaged difference
    seeds: tuple[tuple[float, int], ...]  # per row with several seeds: (standard error of its seed mean, k - 1)

    @property
    def diff(self) -> float:
        return float(self.differences.mean())


def shared_queries(runs: Sequence[ByQuery]) -> dict[str, list[str]]:
    datasets = set.intersection(*(set(run) for run in runs))
    shared = {d: sorted(set.intersection(*(set(run[d]) for run in runs))) for d in sorted(datasets)}
    return {d: queries for d, queries in shared.items() if queries}


def macro_weights(shared: Mapping[str, list[str]]) -> dict[str, float]:
    """Per-query weights whose plain mean over all queries is the macro average over datasets."""
    total = sum(map(len, shared.values()))
    return {d: total / (len(shared) * len(queries)) for d, queries in shared.items()}


def seed_mean(runs: Runs, shared: Mapping[str, list[str]]) -> np.ndarray:
    return np.array([sum(run[d][q] for run in runs) / len(runs) for d, queries in shared.items() for q in queries])


def seed_error(runs: Runs, shared: Mapping[str, list[str]], weights: Mapping[str, float]) -> tuple[float, int] | None:
    """The standard error of the row's mean over its k seeds (from their macro means) and k - 1; None for one
    seed or seeds that agree."""
    if len(runs) < 2:
        return None
    total = sum(map(len, shared.values()))
    means = [sum(run[d][q] * weights[d] for d, queries in shared.items() for q in queries) / total for run in runs]
    error = float(np.std(means, ddof=1)) / math.sqrt(len(runs))
    return (error, len(runs) - 1) if error > 1e-12 else None


def paired(row: Runs, other: Runs) -> Paired | None:
    """row - other on the queries every seed of both has; None with fewer than two."""
    if not row or not other:
        return None
    shared = shared_queries([*row, *other])
    if sum(map(len, shared.values())) < 2:
        return None
    weights = macro_weights(shared)
    scale = np.array([weights[d] for d, queries in shared.items() for _ in queries])
    differences = (seed_mean(row, shared) - seed_mean(other, shared)) * scale
    seeds = (seed_error(row, shared, weights), seed_error(other, shared, weights))
    return Paired(differences, tuple(seed for seed in seeds if seed))


# --- sign patterns --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Patterns:
    """Sign patterns over the queries, each as what the inversion needs: how many queries it flips, the sums
    of the flipped and the kept differences, the seed noise drawn with it, and its weight."""

    flipped: np.ndarray
    flipped_sum: np.ndarray
    kept_sum: np.ndarray
    seed_shift: np.ndarray
    weight: np.ndarray
    exact: bool


def tie_groups(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct differences (equal to 12 decimals) and how many queries share each."""
    _, inverse, counts = np.unique(differences.round(12), return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=differences) / counts, counts


def exact_patterns(differences: np.ndarray) -> Patterns:
    """Every sign pattern, tied differences enumerated by how many of them flip (binomial weights)."""
    values, counts = tie_groups(differences)
    flipped, flipped_sum, kept_sum, weight = np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1)
    for value, count in zip(values, counts):
        k = np.arange(count + 1)  # how many of the tied queries flip
        flipped = (flipped[:, None] + k).ravel()
        flipped_sum = (flipped_sum[:, None] + value * k).ravel()
        kept_sum = (kept_sum[:, None] + value * (count - k)).ravel()
        weight = (weight[:, None] * stats.binom.pmf(k, count, 0.5)).ravel()
    return Patterns(flipped, flipped_sum, kept_sum, np.zeros(len(flipped)), weight, True)


@lru_cache(maxsize=4)  # one per query count in use: 20,001 x 300 patterns are 48 MB
def random_flips(size: int) -> np.ndarray:
    """RESAMPLES rows of 0/1 (1: flipped) over `size` queries, then the observed pattern (all 0)."""
    drawn = np.random.default_rng([FLIP_SEED, size]).integers(0, 2, size=(RESAMPLES, size)).astype(float)
    return np.vstack([drawn, np.zeros((1, size))])


@lru_cache(maxsize=16)
def seed_draws(degrees: tuple[int, ...]) -> np.ndarray:
    """RESAMPLES rows of independent t variates, one column per row's k - 1, then the observed (all 0)."""
    rng = np.random.default_rng([FLIP_SEED, *degrees])
    drawn = np.column_stack([rng.standard_t(dof, RESAMPLES) for dof in degrees]) if degrees else np.zeros((RESAMPLES, 0))
    return np.vstack([drawn, np.zeros((1, len(degrees)))])


def seed_noise(seeds: Sequence[tuple[float, int]]) -> np.ndarray:
    """The seed noise of each random pattern (0 for the observed one), in units of the mean difference."""
    return seed_draws(tuple(dof for _, dof in seeds)) @ np.array([error for error, _ in seeds], dtype=float)


def random_patterns(differences: np.ndarray, seeds: Sequence[tuple[float, int]]) -> Patterns:
    flips = random_flips(len(differences))
    return Patterns(flips.sum(axis=1), flips @ differences, (1 - flips) @ differences, seed_noise(seeds),
                    np.ones(len(flips)), False)


def sign_patterns(differences: np.ndarray, seeds: Sequence[tuple[float, int]]) -> Patterns:
    _, counts = tie_groups(differences)
    if seeds or math.prod(int(c) + 1 for c in counts) > EXACT_PATTERNS:
        return random_patterns(differences, seeds)
    return exact_patterns(differences)


# --- the randomization test inverted --------------------------------------------------------------------------

class Inversion:
    """p(d) for every shift d, and the intervals {d : p(d) >= alpha}, from the shifts each pattern counts at.

    A pattern counts at d when |flipped mean + s - d| >= |observed mean - d| (s: its seed noise). With F of n
    queries flipped (sums `flipped_sum`, `kept_sum`), that product of two linear factors is >= 0 between
    r1 = (flipped_sum - n s / 2) / F and r2 = (kept_sum + n s / 2) / (n - F), whose weighted mean is the
    observed mean: every pattern counts there, so p falls monotonically on either side and the accepted shifts
    form one interval. p and the interval ends are read off the same cumulated weights, so the interval holds
    a shift exactly when its p-value is >= alpha.
    """

    def __init__(self, patterns: Patterns, queries: int, mean: float, tolerance: float):
        low, high = self.counting_range(patterns, queries)
        low, high = low - tolerance, high + tolerance  # equal |flipped| and |observed| means count, as at d = 0
        total = patterns.weight.sum()
        by_low, by_high = np.argsort(low, kind="stable"), np.argsort(-high, kind="stable")
        self.mean, self.exact = mean, patterns.exact
        self.low, self.low_p = low[by_low], np.cumsum(patterns.weight[by_low]) / total
        self.high, self.high_p = high[by_high], np.cumsum(patterns.weight[by_high]) / total

    @staticmethod
    def counting_range(patterns: Patterns, n: int) -> tuple[np.ndarray, np.ndarray]:
        flipped, half_shift = patterns.flipped, n * patterns.seed_shift / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            r1 = (patterns.flipped_sum - half_shift) / flipped
            r2 = (patterns.kept_sum + half_shift) / (n - flipped)
        low, high = np.fmin(r1, r2), np.fmax(r1, r2)
        # All queries kept (or all flipped): one factor is the constant n s / 2, the other a line through r2 (r1).
        kept_all, flipped_all, positive = flipped == 0, flipped == n, half_shift > 0
        low = np.where(kept_all & positive, -np.inf, np.where(kept_all, r2, low))
        high = np.where(kept_all & ~positive, np.inf, np.where(kept_all, r2, high))
        low = np.where(flipped_all & ~positive, -np.inf, np.where(flipped_all, r1, low))
        high = np.where(flipped_all & positive, np.inf, np.where(flipped_all, r1, high))
        whole = (kept_all | flipped_all) & (half_shift == 0)
        return np.where(whole, -np.inf, low), np.where(whole, np.inf, high)

    def p(self, shift: float) -> float:
        if shift <= self.mean:
            counted = np.searchsorted(self.low, shift, side="right")
            return float(self.low_p[counted - 1]) if counted else 0.0
        counted = np.searchsorted(-self.high, -shift, side="right")
        return float(self.high_p[counted - 1]) if counted else 0.0

    def interval(self, alpha: float) -> tuple[float, float]:
        low = self.low[min(np.searchsorted(self.low_p, alpha, side="left"), len(self.low) - 1)]
        high = self.high[min(np.searchsorted(self.high_p, alpha, side="left"), len(self.high) - 1)]
        return float(low), float(high)


def inversion(differences: np.ndarray, seeds: Sequence[tuple[float, int]] = ()) -> Inversion:
    patterns = sign_patterns(differences, seeds)
    tolerance = 1e-9 * (np.abs(differences).max() + 1e-12)
    return Inversion(patterns, len(differences), float(differences.mean()), tolerance)


def seed_half_width(seeds: Sequence[tuple[float, int]]) -> float:
    """The 95% quantile of |the seed noise drawn|: the seed noise as a half-width, beside the query's."""
    if not seeds:
        return math.nan
    return float(np.quantile(np.abs(seed_noise(seeds)[:-1]), 1 - ALPHA, method="inverted_cdf"))


def randomization_comparison(data: Paired) -> Comparison:
    test = inversion(data.differences, data.seeds)
    ci_low, ci_high = test.interval(ALPHA)
    lower, upper = test.interval(2 * ALPHA)
    query_low, query_high = inversion(data.differences).interval(ALPHA) if data.seeds else (ci_low, ci_high)
    return Comparison(data.diff, ci_low, ci_high, test.p(0.0), lower, upper, len(data.differences),
                      (query_high - query_low) / 2, seed_half_width(data.seeds), test.exact)


# --- the t-test -----------------------------------------------------------------------------------------------

def t_comparison(data: Paired) -> Comparison:
    """t on the per-query differences; with seeds, each row's squared seed standard error added to the
    standard error, degrees of freedom by Welch-Satterthwaite. No spread at all: no test (p 1)."""
    n = len(data.differences)
    query = (float(np.var(data.differences, ddof=1)) / n, n - 1)
    seeds = [(error ** 2, dof) for error, dof in data.seeds]
    variance = query[0] + sum(v for v, _ in seeds)
    if variance <= 0:
        return Comparison(data.diff, -math.inf, math.inf, 1.0, -math.inf, math.inf, n, math.nan)
    se, df = math.sqrt(variance), welch_degrees([query, *seeds])
    two_sided, one_sided = float(stats.t.ppf(1 - ALPHA / 2, df)), float(stats.t.ppf(1 - ALPHA, df))
    return Comparison(data.diff, data.diff - two_sided * se, data.diff + two_sided * se,
                      float(2 * stats.t.sf(abs(data.diff) / se, df)), data.diff - one_sided * se, data.diff + one_sided * se,
                      n, t_half_width([query]), t_half_width(seeds))


def welch_degrees(parts: Sequence[tuple[float, int]]) -> float:
    """Welch-Satterthwaite: the degrees of freedom of a sum of variance estimates (variance, its dof)."""
    return sum(v for v, _ in parts) ** 2 / sum(v ** 2 / dof for v, dof in parts if v > 0)


def t_half_width(parts: Sequence[tuple[float, int]]) -> float:
    variance = sum(v for v, _ in parts)
    return float(stats.t.ppf(1 - ALPHA / 2, welch_degrees(parts)) * math.sqrt(variance)) if variance > 0 else math.nan


COMPARISONS = {"randomization": randomization_comparison, "t": t_comparison}


def compare(row: Runs, other: Runs, test: str = "randomization") -> Comparison | None:
    """row - other (each a list of per-seed values), uncorrected; None with fewer than two shared queries."""
    data = paired(row, other)
    return None if data is None else COMPARISONS[test](data)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest p times (m - k + 1), made monotone, capped at 1."""
    order = np.argsort(p_values, kind="stable")
    scaled = np.array(p_values, dtype=float)[order] * (len(p_values) - np.arange(len(p_values)))
    adjusted = np.empty(len(p_values))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted.tolist()
