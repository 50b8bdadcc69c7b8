"""Paired statistics that compare two pruning methods honestly.

A table of mean Dice per method says nothing about whether one method beats another: with a handful
of test volumes and a few seeds, the differences between methods are often smaller than the
differences between cases. Every method is evaluated on the same test cases with the same replicates
(a replicate is one seed of the whole experiment), so the comparison is paired: we work on the
per-case, per-replicate differences a - b, which removes the case-to-case spread that both methods
share.

- `paired_comparison` gives the mean difference, a two-level (cases, then replicates) percentile
  bootstrap interval and a two-sided sign-flip permutation test on the per-case differences;
  with an equivalence margin, also a two one-sided test (TOST) against ±margin and the minimum
  detectable difference (MDE) at 80 % power for this many cases and replicates.
- `outcome` decides one of four: a better, b better, equivalent within ±margin, or inconclusive
  (differences below the MDE cannot be seen): never "no difference" alone, which cannot tell a tie
  from too little data.
- `verdict` turns one comparison into a sentence that never claims more than the interval and the
  test allow, and says when there are too few test cases for the test to ever reach significance.
- `comparison_rows` runs them over a long results table, for every budget, pair and metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

MINUS = "\u2212"  # the typographic minus sign used in verdicts


@dataclass(frozen=True)
class PairedComparison:
    """Mean paired difference a - b with its bootstrap interval and a paired test."""

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_cases: int
    n_replicates: int
    min_p_value: float  # the smallest p-value the test could give with this many cases
    margin: float = math.nan  # equivalence margin (metric units); NaN: no equivalence test
    p_equivalence: float = math.nan  # TOST p against ±margin (equivalent when <= alpha)
    mde: float = math.nan  # minimum detectable difference at 80 % power (metric units)


@dataclass(frozen=True)
class _Metric:
    scale: float  # multiply differences by this for reporting
    unit: str
    direction: int  # +1 higher is better, -1 lower is better, 0 no direction


# Reporting conventions per metric (names as in varprune.engine.evaluate.METRIC_COLUMNS).
METRICS: dict[str, _Metric] = {
    "dice": _Metric(100.0, "points", +1),
    "voe": _Metric(100.0, "points", -1),
    "rvd": _Metric(100.0, "points", 0),  # signed; closer to 0 is better, so a difference has no direction
    "assd_mm": _Metric(1.0, "mm", -1),
    "msd_mm": _Metric(1.0, "mm", -1),
    "hd95_mm": _Metric(1.0, "mm", -1),
}

# Equivalence margins (metric units, config stats.equivalence_margin): half a Dice point, 1 mm.
EQUIVALENCE_MARGINS: dict[str, float] = {"dice": 0.005, "voe": 0.005, "rvd": 0.005, "assd_mm": 1.0,
                                         "msd_mm": 1.0, "hd95_mm": 1.0}
ALPHA = 0.05
POWER = 0.8
OUTCOMES = ("a_better", "b_better", "equivalent", "inconclusive")

COMPARISON_COLUMNS = ["budget", "method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high",
                      "p_value", "p_adjusted", "n_cases", "n_replicates", "min_p_value", "margin",
                      "p_equivalence", "mde", "outcome", "verdict"]


# ---------------------------------------------------------------- one comparison


def _as_2d(x: np.ndarray) -> np.ndarray:
    if x.ndim == 1:
        return x[np.newaxis, :]
    if x.ndim == 2:
        return x
    raise ValueError(f"expected shape (n_replicates, n_cases) or (n_cases,), got {x.shape}")


def _bootstrap_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `d` (replicates × cases) over `resamples` two-level resamples, vectorised.

    Each resample draws cases with replacement, then replicates with replacement, and takes the
    mean of d over drawn replicates × drawn cases. That mean is Σ_r Σ_c w_r d[r, c] w_c / (R C)
    with w the draw counts, so no resample is ever materialised.
    """
    n_rep, n_cases = d.shape
    case_idx = rng.integers(0, n_cases, size=(resamples, n_cases))
    rep_idx = rng.integers(0, n_rep, size=(resamples, n_rep))
    rows = np.arange(resamples)[:, np.newaxis]
    case_w = np.bincount((rows * n_cases + case_idx).ravel(), minlength=resamples * n_cases)
    rep_w = np.bincount((rows * n_rep + rep_idx).ravel(), minlength=resamples * n_rep)
    case_w = case_w.reshape(resamples, n_cases).astype(float)
    rep_w = rep_w.reshape(resamples, n_rep).astype(float)
    return ((rep_w @ d) * case_w).sum(axis=1) / (n_rep * n_cases)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _sign_flip_p(per_case: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided paired permutation p-value of the mean per-case difference (scipy does the test).

    The pairs are (difference, 0): swapping a pair flips the sign of that case's difference.
    """
    if per_case.size < 2 or np.all(per_case == 0):
        return 1.0  # one case: both sign flips give |mean| = observed, so p = 1
    return _one_sided_p(per_case, "two-sided", resamples, rng)


def _one_sided_p(per_case: np.ndarray, alternative: str, resamples: int, rng: np.random.Generator) -> float:
    """Sign-flip p-value that the mean per-case difference is above ("greater"), below ("less")
    or away from ("two-sided") zero: exact over all 2^n flips when they fit in `resamples`."""
    n = per_case.size
    exact = 2**n <= resamples
    result = sps.permutation_test(
        (per_case, np.zeros_like(per_case)),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf if exact else resamples,
        alternative=alternative,
        rng=None if exact else rng,
    )
    return float(min(1.0, result.pvalue))


def minimum_detectable_difference(per_case: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a paired test on these cases detects with `power`:
    (t_{1-alpha/2} + t_{power}) * sd / sqrt(n), df = n - 1, from the observed spread of the
    per-case differences (each already averaged over its replicates). Infinite when the sign-flip
    test cannot reach `alpha` at all with this many cases (fewer than 6 at 0.05)."""
    n = per_case.size
    if n < 2 or 2.0 ** (1 - n) > alpha:
        return math.inf
    spread = float(np.std(per_case, ddof=1))
    df = n - 1
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * spread / math.sqrt(n))


def _tost_p(per_case: np.ndarray, means: np.ndarray | None, margin: float, resamples: int,
            rng: np.random.Generator) -> float:
    """Two one-sided tests against ±margin on the same paired data as the difference test: the
    larger of the two one-sided sign-flip p-values (mean > -margin, mean < +margin) and of the
    bootstrap's tail shares beyond each bound (so p <= alpha also means the 1 - 2 alpha two-level
    interval lies inside the margin). A single case cannot show equivalence: p = 1."""
    if per_case.size < 2 or means is None:
        return 1.0
    p_lower = _one_sided_p(per_case + margin, "greater", resamples, rng)
    p_upper = _one_sided_p(per_case - margin, "less", resamples, rng)
    tails = (float(np.mean(means <= -margin)), float(np.mean(means >= margin)))
    return max(p_lower, p_upper, *tails)


def paired_comparison(a, b, *, confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0, margin: float | None = None) -> PairedComparison:
    """Compare a and b, arrays (n_replicates, n_cases) paired by position, or 1-D (one replicate).

    Cases with a NaN in a or b in any replicate are left out. The interval is a two-level
    percentile bootstrap (cases, then replicates); the p-value is a two-sided sign-flip
    permutation test on the per-case differences averaged over replicates. With a `margin`
    (metric units), also the TOST p against ±margin and the MDE at 80 % power.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must have the same shape to be paired: a is {a_arr.shape}, "
                         f"b is {b_arr.shape}")
    d = _as_2d(a_arr) - _as_2d(b_arr)
    keep = ~np.isnan(d).any(axis=0)
    d = d[:, keep]
    n_rep, n_cases = d.shape
    if n_cases == 0 or n_rep == 0:
        raise ValueError(f"no test case left to compare: all {keep.size} cases have a NaN in a or b "
                         f"in some replicate (or the input is empty)")

    # Centre on one observed difference so that constant differences give exactly [d, d].
    ref = float(d[0, 0])
    centred = d - ref
    mean_diff = ref + float(centred.mean())
    rng = np.random.default_rng(seed)
    means = None
    if n_cases == 1:
        ci_low = ci_high = mean_diff  # nothing to resample over cases
    else:
        means = _bootstrap_means(centred, resamples, rng)
        tail = (1 - confidence) / 2
        low, high = np.quantile(means, [tail, 1 - tail])
        ci_low, ci_high = ref + float(low), ref + float(high)

    per_case = d.mean(axis=0)
    p_value = _sign_flip_p(per_case, resamples, rng)
    min_p = min(1.0, 2.0 ** (1 - n_cases))
    equivalence = {}
    if margin is not None:
        if not margin > 0:
            raise ValueError(f"the equivalence margin must be positive, got {margin}")
        equivalence = dict(margin=float(margin), mde=minimum_detectable_difference(per_case),
                           p_equivalence=_tost_p(per_case, None if means is None else ref + means, margin,
                                                 resamples, rng))
    return PairedComparison(mean_diff=mean_diff, ci_low=ci_low, ci_high=ci_high, p_value=p_value,
                            n_cases=int(n_cases), n_replicates=int(n_rep), min_p_value=min_p, **equivalence)


def outcome(c: PairedComparison, *, metric: str = "dice", alpha: float = ALPHA,
            p_adjusted: float | None = None) -> str:
    """One of OUTCOMES. Equivalent when the TOST p is at most alpha (a difference inside the
    margin is negligible by the margin's definition, even when it is significant); a or b better
    when the interval excludes 0 and the (adjusted) test is significant; otherwise inconclusive.
    For a metric without a better direction (rvd), "a_better" reads "a higher"."""
    if c.n_cases < 2:
        return "inconclusive"
    if not math.isnan(c.p_equivalence) and c.p_equivalence <= alpha:
        return "equivalent"
    p = c.p_value if p_adjusted is None or math.isnan(p_adjusted) else p_adjusted
    if (c.ci_low > 0 or c.ci_high < 0) and p <= alpha:
        higher = c.ci_low > 0
        direction = METRICS[metric].direction if metric in METRICS else 1
        return "a_better" if higher == (direction >= 0) else "b_better"
    return "inconclusive"


# ---------------------------------------------------------------- words


def _signed(value: float, decimals: int = 2) -> str:
    text = f"{abs(value):.{decimals}f}"
    negative = value < 0 and float(text) != 0
    return (MINUS if negative else "+") + text


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def verdict(name_a: str, name_b: str, c: PairedComparison, *, metric: str = "dice",
            alpha: float = 0.05, explain_power: bool = True, p_adjusted: float | None = None,
            family: int = 1) -> str:
    """One plain-English sentence on `c` (a = name_a, b = name_b) that claims no more than it shows.

    `p_adjusted` (with the number of comparisons in its `family`) is the p-value corrected for
    multiple comparisons; when given, it decides significance. `explain_power=False` leaves out
    the note that the test cannot reach significance with this few cases (for a page that says
    it once for all comparisons).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    m = METRICS[metric]
    sample = f"{_plural(c.n_cases, 'test case')} × {_plural(c.n_replicates, 'replicate')}"
    adjusted = p_adjusted is not None and family > 1 and not math.isnan(p_adjusted)
    tested = _p(c.p_value)
    if adjusted:
        tested += f", {p_adjusted:.2g} adjusted for {family} comparisons"
    head = (f"{name_a} {MINUS} {name_b} = {_signed(c.mean_diff * m.scale)} {m.unit} "
            f"[{_signed(c.ci_low * m.scale)}, {_signed(c.ci_high * m.scale)}] "
            f"({tested}; {sample})")
    excludes_zero = c.ci_low > 0 or c.ci_high < 0
    significant = (p_adjusted if adjusted else c.p_value) <= alpha
    decided = outcome(c, metric=metric, alpha=alpha, p_adjusted=p_adjusted if adjusted else None)
    equivalence_tested = not math.isnan(c.p_equivalence)
    if c.n_cases < 2:
        # One case: the "interval" is the difference itself; nothing separates it from noise.
        tail = "a single test case gives no interval and no test: nothing can be concluded."
    elif decided == "equivalent":
        tail = (f"equivalent within ±{c.margin * m.scale:.2f} {m.unit} (TOST {_p(c.p_equivalence)})"
                + (f"; {name_a} differs by a negligible amount." if excludes_zero and significant else "."))
    elif equivalence_tested and not (excludes_zero and significant):
        why = ""
        if excludes_zero:
            why = f" (the interval excludes 0 but the paired test does not confirm it, {tested})"
        elif significant:
            why = f" (the paired test gives {_p(c.p_value)} but the interval includes 0)"
        seen = (f"no difference can be detected with {sample} (the paired test cannot reach p < {alpha:g})"
                if math.isinf(c.mde) else
                f"differences below {c.mde * m.scale:.2f} {m.unit} (the MDE at 80 % power) cannot be seen "
                f"with {sample}")
        tail = (f"inconclusive: {seen}, and equivalence within ±{c.margin * m.scale:.2f} {m.unit} is not "
                f"shown (TOST {_p(c.p_equivalence)}){why}.")
    elif excludes_zero and significant:
        if m.direction == 0:
            side = "higher" if c.ci_low > 0 else "lower"
            tail = f"{name_a} gives the {side} {metric} (neither sign is better for {metric})."
        else:
            a_better = (c.ci_low > 0) == (m.direction > 0)
            tail = f"{name_a} is {'better' if a_better else 'worse'}."
    elif excludes_zero:
        tail = (f"the interval excludes 0 but the paired test does not confirm it ({tested}); "
                "treat as suggestive only.")
    elif significant:
        tail = (f"the paired test gives {_p(c.p_value)} but the interval includes 0; "
                "treat as suggestive only.")
    else:
        tail = f"no difference detectable with {sample}."
    text = f"{head}: {tail}"
    if explain_power and c.min_p_value > alpha:
        text += (f" With {_plural(c.n_cases, 'test case')} the paired test cannot reach p < {alpha:g} "
                 f"(smallest possible p = {c.min_p_value:.3g}): more test cases are needed "
                 "(more replicates do not lower this bound).")
    return text


def power_note(n_cases: int, alpha: float = 0.05) -> str:
    """The sentence that no paired test on `n_cases` cases can reach `alpha`, or '' when one can."""
    smallest = min(1.0, 2.0 ** (1 - n_cases))
    if smallest <= alpha:
        return ""
    return (f"With {_plural(n_cases, 'test case')} no paired test can reach p < {alpha:g} (smallest possible "
            f"p = {smallest:.3g}): more test cases are needed (more replicates do not lower this bound).")


def comparison_from_row(row) -> PairedComparison:
    """A PairedComparison back from a comparison.csv row."""
    return PairedComparison(mean_diff=row.mean_diff, ci_low=row.ci_low, ci_high=row.ci_high,
                            p_value=row.p_value, n_cases=int(row.n_cases), n_replicates=int(row.n_replicates),
                            min_p_value=row.min_p_value, margin=getattr(row, "margin", math.nan),
                            p_equivalence=getattr(row, "p_equivalence", math.nan),
                            mde=getattr(row, "mde", math.nan))


def equivalence_margins(configured: dict | None = None) -> dict[str, float]:
    """The margins per metric: the defaults, overridden by config `stats.equivalence_margin`."""
    margins = dict(EQUIVALENCE_MARGINS)
    for metric, value in (configured or {}).items():
        if metric not in METRICS:
            raise ValueError(f"stats.equivalence_margin: unknown metric {metric!r}; known: "
                             f"{', '.join(METRICS)}")
        margins[metric] = float(value)
    return margins


# ---------------------------------------------------------------- a whole table


def comparison_rows(table: pd.DataFrame, pairs: list[tuple[str, str]], metrics: list[str], *,
                    budget_column: str = "budget", confidence: float = 0.95, resamples: int = 10_000,
                    seed: int = 0, margins: dict[str, float] | None = None) -> pd.DataFrame:
    """One paired comparison per (budget, pair, metric) of a long table (method, budget, replicate, case,
    metrics...).

    Rows are paired by (replicate, case). Rows with a NaN budget (a reference measured once) count
    at every budget. `margins` (metric -> equivalence margin; default EQUIVALENCE_MARGINS) set the
    TOST and the outcome. A pair with no common (replicate, case) at a budget is skipped; a metric with
    no usable case for a present pair gives a row of NaNs that says so.
    """
    required = ["method", budget_column, "replicate", "case", *metrics]
    missing = [col for col in required if col not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; it has {list(table.columns)}")
    everywhere = table[budget_column].isna()
    budgets: Sequence = sorted(table.loc[~everywhere, budget_column].unique())
    if not budgets:
        budgets = [math.nan]  # no budget at all: one group holding everything

    margins = equivalence_margins(margins)
    rows, tests = [], []
    for budget in budgets:
        at_budget = table[everywhere | (table[budget_column] == budget)]
        for method_a, method_b in pairs:
            merged = _merge_pair(at_budget, method_a, method_b, budget)
            if merged.empty:
                continue
            for metric in metrics:
                row = {"budget": budget, "method_a": method_a, "method_b": method_b, "metric": metric}
                c = _compare_metric(merged, row, confidence, resamples, seed, margins.get(metric))
                tests.append(c)
                rows.append(row)
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    _adjust_and_word(out, tests)
    return out


def _compare_metric(merged: pd.DataFrame, row: dict, confidence: float, resamples: int,
                    seed: int, margin: float | None) -> PairedComparison | None:
    """Fill `row` (budget, methods and metric set) with the comparison of one metric of a merged pair;
    the comparison, or None when no case has the metric for both methods in every replicate."""
    metric, method_a, method_b = row["metric"], row["method_a"], row["method_b"]
    grid_a = merged.pivot(index="replicate", columns="case", values=f"{metric}_a").to_numpy(float)
    grid_b = merged.pivot(index="replicate", columns="case", values=f"{metric}_b").to_numpy(float)
    if np.isnan(grid_a + grid_b).any(axis=0).all():  # no case has the metric for both, everywhere
        row.update(mean_diff=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan,
                   n_cases=0, n_replicates=len(grid_a), min_p_value=math.nan, margin=margin,
                   p_equivalence=math.nan, mde=math.nan, outcome="inconclusive",
                   verdict=f"{method_a} {MINUS} {method_b}: no test case has {metric} "
                           "for both methods in every replicate.")
        return None
    c = paired_comparison(grid_a, grid_b, confidence=confidence, resamples=resamples, seed=seed,
                          margin=margin)
    row.update(mean_diff=c.mean_diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
               n_cases=c.n_cases, n_replicates=c.n_replicates, min_p_value=c.min_p_value, margin=c.margin,
               p_equivalence=c.p_equivalence, mde=c.mde)
    return c


def _adjust_and_word(out: pd.DataFrame, tests: list[PairedComparison | None]) -> None:
    """Add the Benjamini-Hochberg adjusted p-values to `out` and the verdicts that use them (in place).

    The comparisons of one metric at one budget are one family: adjusting their p-values keeps one
    lucky pair among many from being called a difference.
    """
    out["p_adjusted"] = math.nan
    families = out.groupby(["budget", "metric"], dropna=False)["p_value"]
    for _, family in families:
        tested = family.dropna()
        if len(tested):
            out.loc[tested.index, "p_adjusted"] = sps.false_discovery_control(tested.to_numpy())
    sizes = families.transform("count")
    out["verdict"] = out["verdict"].astype(object)
    out["outcome"] = out["outcome"].astype(object)
    for index, c in zip(out.index, tests, strict=True):
        if c is not None:
            row = out.loc[index]
            adjusted = row["p_adjusted"] if int(sizes[index]) > 1 else None
            out.loc[index, "outcome"] = outcome(c, metric=row["metric"], p_adjusted=adjusted)
            out.loc[index, "verdict"] = verdict(row["method_a"], row["method_b"], c, metric=row["metric"],
                                                p_adjusted=row["p_adjusted"], family=int(sizes[index]))


def _merge_pair(at_budget: pd.DataFrame, method_a: str, method_b: str, budget) -> pd.DataFrame:
    """Rows of a and b joined on (replicate, case), metric columns suffixed _a and _b."""
    keys = ["replicate", "case"]
    sides = []
    for method in (method_a, method_b):
        rows = at_budget[at_budget["method"] == method]
        duplicated = rows.duplicated(keys)
        if duplicated.any():
            first = rows.loc[duplicated, keys].iloc[0].tolist()
            raise ValueError(f"method {method!r} has more than one row for (replicate, case) = {first} "
                             f"at budget {budget}")
        sides.append(rows)
    return sides[0].merge(sides[1], on=keys, how="inner", suffixes=("_a", "_b"))
