"""Paired comparison of two methods: bootstrap interval, sign-flip test, verdicts, the long-table runner."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from varprune.study.stats import (
    EQUIVALENCE_MARGINS,
    OUTCOMES,
    PairedComparison,
    comparison_rows,
    equivalence_margins,
    minimum_detectable_difference,
    outcome,
    paired_comparison,
    verdict,
)

MINUS = "\u2212"


def scores(n_rep: int, n_cases: int, seed: int = 0) -> np.ndarray:
    """Plausible Dice values, different per case and replicate."""
    return np.random.default_rng(seed).uniform(0.80, 0.95, size=(n_rep, n_cases))


# ---------------------------------------------------------------- paired_comparison


def test_a_fixed_offset_is_recovered_with_an_interval_above_zero_and_the_smallest_exact_p():
    b = scores(3, 8)
    c = paired_comparison(b + 0.02, b)
    assert c.mean_diff == pytest.approx(0.02, abs=1e-12)
    assert c.ci_low > 0
    assert c.ci_low == pytest.approx(0.02, abs=1e-12) and c.ci_high == pytest.approx(0.02, abs=1e-12)
    assert c.p_value == pytest.approx(2 / 2**8, rel=1e-12)
    assert c.min_p_value == 2 / 2**8
    assert (c.n_cases, c.n_replicates) == (8, 3)


@pytest.mark.parametrize("d", [0.1, 0.7, -0.02])  # 0.1, 0.7: a plain float mean of 24 copies is off
def test_constant_differences_give_exactly_that_value_as_the_interval(d):
    c = paired_comparison(np.full((3, 8), d), np.zeros((3, 8)))
    assert c.mean_diff == d and c.ci_low == d and c.ci_high == d


def test_pure_noise_gives_an_interval_that_covers_zero():
    rng = np.random.default_rng(7)
    b = scores(3, 40, seed=1)
    a = b + rng.normal(0.0, 0.03, size=b.shape)
    c = paired_comparison(a, b)
    assert c.ci_low < 0 < c.ci_high
    assert c.p_value > 0.05
    assert "no difference detectable with 40 test cases × 3 replicates." in verdict("a", "b", c)


def test_a_negative_offset_under_noise_gets_the_right_sign_and_is_called_worse():
    rng = np.random.default_rng(3)
    b = scores(3, 12, seed=2)
    a = b - 0.05 + rng.normal(0.0, 0.02, size=b.shape)
    c = paired_comparison(a, b)
    assert c.mean_diff == pytest.approx(-0.05, abs=0.01)
    assert c.ci_high < 0 and c.ci_low < c.mean_diff < c.ci_high
    assert c.p_value < 0.01
    assert verdict("variable", "fixed", c).endswith("variable is worse.")


def test_cases_with_a_nan_in_any_replicate_are_left_out_and_not_counted():
    b = scores(2, 6, seed=4)
    a = b + np.linspace(-0.02, 0.05, 6)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[1, 2] = np.nan  # case 2 lacks a value in one replicate only
    b_nan[0, 4] = np.nan  # HD95 of an empty prediction
    c = paired_comparison(a_nan, b_nan)
    kept = [0, 1, 3, 5]
    assert c.n_cases == 4 and c.n_replicates == 2
    assert c.mean_diff == pytest.approx(float((a - b)[:, kept].mean()), abs=1e-12)
    assert c == paired_comparison(a[:, kept], b[:, kept])


def test_no_case_left_after_dropping_nans_is_refused():
    a = np.array([[0.9, np.nan], [0.8, 0.7]])
    b = np.array([[np.nan, 0.9], [0.8, 0.7]])
    with pytest.raises(ValueError, match="no test case left"):
        paired_comparison(a, b)


def test_arrays_of_different_shapes_are_refused_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 8\).*\(3, 7\)"):
        paired_comparison(np.zeros((3, 8)), np.zeros((3, 7)))


def test_one_dimensional_input_is_one_replicate_and_an_ordinary_case_bootstrap():
    rng = np.random.default_rng(5)
    b = scores(1, 15, seed=5)[0]
    a = b + 0.01 + rng.normal(0, 0.03, size=15)
    c = paired_comparison(a, b)
    assert c == paired_comparison(a[np.newaxis], b[np.newaxis])
    assert (c.n_replicates, c.n_cases) == (1, 15)
    # Against an independent plain case bootstrap (other seed, many more resamples).
    d = a - b
    idx = np.random.default_rng(99).integers(0, 15, size=(100_000, 15))
    low, high = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    se = d.std(ddof=1) / np.sqrt(15)
    assert c.ci_low == pytest.approx(low, abs=0.05 * se)
    assert c.ci_high == pytest.approx(high, abs=0.05 * se)


def test_the_bootstrap_resamples_replicates_as_well_as_cases():
    # Cases agree closely; replicates (seeds) disagree strongly.
    rng = np.random.default_rng(6)
    d = np.array([-0.04, 0.01, 0.06])[:, np.newaxis] + rng.normal(0, 0.002, size=(3, 10))
    b = scores(3, 10, seed=6)
    full = paired_comparison(b + d, b)
    averaged = paired_comparison((b + d).mean(axis=0), b.mean(axis=0))
    assert full.mean_diff == pytest.approx(averaged.mean_diff, abs=1e-12)
    assert averaged.ci_high - averaged.ci_low < 0.004
    assert full.ci_high - full.ci_low > 5 * (averaged.ci_high - averaged.ci_low)
    assert full.ci_low < 0 < full.ci_high  # the seed spread makes the difference uncertain


def test_the_p_value_is_the_exact_sign_flip_test_on_case_means():
    rng = np.random.default_rng(8)
    b = scores(2, 6, seed=8)
    a = b + 0.01 + rng.normal(0, 0.02, size=b.shape)
    per_case = (a - b).mean(axis=0)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=6)))
    null = (signs * per_case).mean(axis=1)
    expected = np.mean(np.abs(null) >= abs(per_case.mean()) - 1e-12)
    assert paired_comparison(a, b).p_value == pytest.approx(expected, rel=1e-9)


def test_with_many_cases_the_p_value_is_a_seeded_random_sign_flip_test_close_to_the_exact_one():
    rng = np.random.default_rng(9)
    per_case = 0.01 + rng.normal(0, 0.03, size=14)  # 2**14 > 10 000 resamples: randomised
    b = scores(1, 14, seed=9)[0]
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=14)))
    exact = np.mean(np.abs((signs * per_case).mean(axis=1)) >= abs(per_case.mean()) - 1e-12)
    c = paired_comparison(b + per_case, b, seed=1)
    assert c.p_value == pytest.approx(exact, abs=0.02)
    assert c.p_value == paired_comparison(b + per_case, b, seed=1).p_value
    assert c.p_value != paired_comparison(b + per_case, b, seed=2).p_value


def test_identical_methods_give_p_one_and_a_zero_interval():
    b = scores(3, 5)
    c = paired_comparison(b, b.copy())
    assert (c.mean_diff, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_a_single_case_gives_a_point_interval_and_p_one():
    c = paired_comparison([[0.9], [0.8]], [[0.85], [0.7]])
    assert c.n_cases == 1 and c.n_replicates == 2
    assert c.ci_low == c.ci_high == pytest.approx(0.075)
    assert c.p_value == 1.0 and c.min_p_value == 1.0


def test_two_cases_work_and_the_test_cannot_go_below_one_half():
    c = paired_comparison([0.90, 0.80], [0.85, 0.70])
    assert c.n_cases == 2 and c.min_p_value == 0.5
    assert c.p_value == pytest.approx(0.5)
    assert c.ci_low == pytest.approx(0.05) and c.ci_high == pytest.approx(0.10)


# ---------------------------------------------------------------- verdict


def comparison(mean, low, high, p, n_cases, n_rep):
    return PairedComparison(mean, low, high, p, n_cases, n_rep, min(1.0, 2.0 ** (1 - n_cases)))


def test_verdict_when_interval_and_test_agree_names_the_better_method():
    c = comparison(0.012, 0.004, 0.020, 0.031, 6, 3)
    assert verdict("variable", "fixed", c) == (
        f"variable {MINUS} fixed = +1.20 points [+0.40, +2.00] (p = 0.031; 6 test cases × 3 replicates): "
        "variable is better."
    )


def test_verdict_when_only_the_interval_excludes_zero_is_suggestive_only():
    c = comparison(0.012, 0.004, 0.020, 0.25, 6, 3)
    text = verdict("variable", "fixed", c)
    assert text.endswith(": the interval excludes 0 but the paired test does not confirm it (p = 0.25); "
                         "treat as suggestive only.")
    assert "better" not in text and "cannot reach" not in text


def test_verdict_when_only_the_test_is_significant_is_suggestive_only():
    c = comparison(0.012, -0.001, 0.020, 0.03, 6, 3)
    text = verdict("variable", "fixed", c)
    assert "but the interval includes 0; treat as suggestive only." in text
    assert "better" not in text


def test_verdict_with_two_cases_says_no_difference_and_that_the_test_cannot_reach_significance():
    c = comparison(0.001, -0.005, 0.007, 0.5, 2, 1)
    assert verdict("variable", "fixed", c) == (
        f"variable {MINUS} fixed = +0.10 points [{MINUS}0.50, +0.70] (p = 0.5; 2 test cases × 1 replicate): "
        "no difference detectable with 2 test cases × 1 replicate. "
        "With 2 test cases the paired test cannot reach p < 0.05 (smallest possible p = 0.5): "
        "more test cases are needed (more replicates do not lower this bound)."
    )


def test_verdict_says_one_test_case_and_one_replicate_in_the_singular():
    text = verdict("a", "b", comparison(0.0, 0.0, 0.0, 1.0, 1, 1))
    assert "(p = 1; 1 test case × 1 replicate)" in text
    assert "With 1 test case the paired test" in text


def test_a_single_test_case_is_never_called_suggestive_even_when_it_differs():
    text = verdict("a", "b", paired_comparison([0.9], [0.8]))
    assert "nothing can be concluded" in text
    assert "suggestive" not in text and "better" not in text


@pytest.mark.parametrize(("metric", "mean", "expected"), [
    ("hd95_mm", 3.1, "+3.10 mm [+1.00, +5.20]"),
    ("assd_mm", 3.1, "+3.10 mm [+1.00, +5.20]"),
    ("voe", 0.031, "+3.10 points [+1.00, +5.20]"),
])
def test_a_positive_difference_in_a_lower_is_better_metric_means_worse(metric, mean, expected):
    scale = mean / 3.1
    c = comparison(mean, 1.0 * scale, 5.2 * scale, 0.01, 10, 2)
    text = verdict("variable", "fixed", c, metric=metric)
    assert expected in text
    assert text.endswith("variable is worse.")
    flipped = comparison(-mean, -5.2 * scale, -1.0 * scale, 0.01, 10, 2)
    assert verdict("variable", "fixed", flipped, metric=metric).endswith("variable is better.")


def test_a_relative_volume_difference_is_reported_without_better_or_worse():
    text = verdict("variable", "fixed", comparison(0.03, 0.01, 0.05, 0.01, 10, 2), metric="rvd")
    assert text == (f"variable {MINUS} fixed = +3.00 points [+1.00, +5.00] (p = 0.01; 10 test cases × "
                    "2 replicates): variable gives the higher rvd (neither sign is better for rvd).")


def test_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric 'dsc'"):
        verdict("a", "b", comparison(0.0, 0.0, 0.0, 1.0, 5, 1), metric="dsc")


# ---------------------------------------------------------------- comparison_rows


def long_table() -> pd.DataFrame:
    """variable and fixed at budgets 0.3 and 0.5; dense once (NaN budget); other with no common cases."""
    rng = np.random.default_rng(11)
    base = scores(2, 4, seed=11)
    rows = []

    def add(method, budget, dice, hd95, replicates=(0, 1)):
        for r, replicate in enumerate(replicates):
            for case in range(4):
                rows.append({"method": method, "budget": budget, "replicate": replicate, "case": case + 1,
                             "dice": dice[r, case], "hd95_mm": hd95[r, case]})

    hd = rng.uniform(5, 20, size=(2, 4))
    add("dense", math.nan, base + 0.03, hd - 1.0)
    for budget, drop in [(0.3, 0.01), (0.5, 0.04)]:
        add("variable", budget, base - drop, hd + 10 * drop)
        fixed_hd = hd + 20 * drop
        if budget == 0.5:
            fixed_hd = fixed_hd.copy()
            fixed_hd[1, 2] = math.nan  # an empty prediction in one replicate
        add("fixed", budget, base - 2 * drop + rng.normal(0, 0.001, size=(2, 4)), fixed_hd)
    add("other", 0.5, base, hd, replicates=(7, 8))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter


def test_comparison_rows_compares_every_budget_pair_and_metric_in_the_given_order():
    table = long_table()
    pairs = [("variable", "fixed"), ("variable", "dense"), ("variable", "other"), ("fixed", "absent")]
    out = comparison_rows(table, pairs, ["dice", "hd95_mm"], resamples=2000)
    assert list(out.columns) == ["budget", "method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high",
                                 "p_value", "p_adjusted", "n_cases", "n_replicates", "min_p_value", "margin",
                                 "p_equivalence", "mde", "outcome", "verdict"]
    assert set(out["outcome"]) <= set(OUTCOMES)
    keys = list(zip(out["budget"], out["method_a"], out["method_b"], out["metric"], strict=True))
    assert keys == [
        (0.3, "variable", "fixed", "dice"), (0.3, "variable", "fixed", "hd95_mm"),
        (0.3, "variable", "dense", "dice"), (0.3, "variable", "dense", "hd95_mm"),
        (0.5, "variable", "fixed", "dice"), (0.5, "variable", "fixed", "hd95_mm"),
        (0.5, "variable", "dense", "dice"), (0.5, "variable", "dense", "hd95_mm"),
    ]
    row = out.set_index(["budget", "method_a", "method_b", "metric"])
    assert row.loc[(0.3, "variable", "dense", "dice"), "mean_diff"] == pytest.approx(-0.04)
    assert row.loc[(0.5, "variable", "dense", "dice"), "mean_diff"] == pytest.approx(-0.07)
    assert row.loc[(0.5, "variable", "fixed", "dice"), "mean_diff"] == pytest.approx(0.04, abs=0.002)
    assert row.loc[(0.5, "variable", "fixed", "hd95_mm"), "n_cases"] == 3
    assert row.loc[(0.5, "variable", "fixed", "dice"), "n_cases"] == 4
    assert (out["n_replicates"] == 2).all()
    assert row.loc[(0.5, "variable", "fixed", "hd95_mm"), "verdict"].startswith(
        f"variable {MINUS} fixed = {MINUS}0.40 mm")


def test_comparison_rows_equal_paired_comparison_on_the_same_grid():
    table = long_table()
    out = comparison_rows(table, [("variable", "fixed")], ["hd95_mm"], resamples=2000, seed=3)
    row = out[out["budget"] == 0.5].iloc[0]

    def grid(method):
        part = table[(table["method"] == method) & (table["budget"] == 0.5)]
        return part.pivot(index="replicate", columns="case", values="hd95_mm").to_numpy()

    c = paired_comparison(grid("variable"), grid("fixed"), resamples=2000, seed=3, margin=1.0)
    assert (row["mean_diff"], row["ci_low"], row["ci_high"], row["p_value"]) == (
        c.mean_diff, c.ci_low, c.ci_high, c.p_value)
    assert (row["margin"], row["p_equivalence"], row["mde"]) == (1.0, c.p_equivalence, c.mde)
    assert row["verdict"] == verdict("variable", "fixed", c, metric="hd95_mm")  # a family of one
    assert row["p_adjusted"] == row["p_value"]


def test_comparison_rows_refuses_a_table_without_the_needed_columns():
    with pytest.raises(ValueError, match="hd95_mm"):
        comparison_rows(long_table().drop(columns="hd95_mm"), [("variable", "fixed")], ["hd95_mm"])


def test_comparison_rows_reports_a_metric_without_any_usable_case_as_a_row_of_nans():
    table = long_table()
    table.loc[table["method"] == "fixed", "hd95_mm"] = math.nan
    out = comparison_rows(table, [("variable", "fixed")], ["dice", "hd95_mm"], resamples=500)
    hd95 = out[out["metric"] == "hd95_mm"]
    assert len(hd95) == 2 and (hd95["n_cases"] == 0).all() and hd95["mean_diff"].isna().all()
    assert hd95["verdict"].str.contains("no test case has hd95_mm for both methods").all()
    assert (out.loc[out["metric"] == "dice", "n_cases"] == 4).all()


def test_comparison_rows_refuses_two_rows_for_the_same_method_replicate_and_case():
    table = long_table()
    dense = table[table["method"] == "dense"].assign(budget=0.3)  # dense now also at 0.3: ambiguous there
    with pytest.raises(ValueError, match="'dense' has more than one row"):
        comparison_rows(pd.concat([table, dense]), [("variable", "dense")], ["dice"], resamples=500)


def test_the_power_note_appears_until_six_cases_can_reach_significance():
    from varprune.study.stats import power_note

    assert "smallest possible p = 0.0625" in power_note(5)
    assert power_note(6) == ""  # 2 / 2**6 = 0.031
    compact = verdict("a", "b", paired_comparison([0.9, 0.7], [0.8, 0.8]), explain_power=False)
    assert "cannot reach" not in compact and "no difference detectable" in compact


def test_one_lucky_pair_among_many_is_not_called_a_difference_after_adjustment():
    """Nine pairs at one budget, one of them with all six cases on one side (p = 2/2**6): the
    Benjamini-Hochberg adjustment over the family keeps it from being called better."""
    rng = np.random.default_rng(5)
    rows = []
    for m in range(10):
        for case in range(6):
            lucky = m == 1
            dice = 0.8 + (0.01 if lucky else rng.normal(0, 0.01))
            rows.append({"method": f"m{m}", "budget": 0.5, "replicate": 0, "case": case, "dice": dice})
    table = pd.DataFrame(rows)
    table.loc[table.method == "m0", "dice"] = 0.8
    pairs = [(f"m{m}", "m0") for m in range(1, 10)]
    out = comparison_rows(table, pairs, ["dice"], resamples=2000).set_index("method_a")
    assert out.loc["m1", "p_value"] == pytest.approx(2 / 2**6)
    assert out.loc["m1", "p_adjusted"] > 0.05
    assert "adjusted for 9 comparisons" in out.loc["m1", "verdict"]
    assert not out.loc["m1", "verdict"].endswith("m1 is better.")
    alone = comparison_rows(table, [("m1", "m0")], ["dice"], resamples=2000).iloc[0]
    assert alone["verdict"].endswith("m1 is better.")


# ---- equivalence (TOST), minimum detectable difference, the four outcomes ----

def test_equal_samples_are_equivalent_within_any_positive_margin():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.85, 0.95, size=(2, 8))
    for margin in (0.0001, 0.005, 0.05):
        c = paired_comparison(a, a.copy(), margin=margin, resamples=2000)
        assert c.p_equivalence <= 0.05 and outcome(c) == "equivalent"
        assert "equivalent within" in verdict("a", "b", c)


def test_a_constant_shift_of_one_point_is_a_better_and_not_equivalent_at_half_a_point():
    b = np.linspace(0.80, 0.90, 8)
    c = paired_comparison(b + 0.01, b, margin=0.005, resamples=2000)
    assert c.p_equivalence > 0.05
    assert outcome(c) == "a_better" and outcome(c, metric="hd95_mm") == "b_better"  # lower is better
    assert verdict("a", "b", c).endswith("a is better.")
    wide = paired_comparison(b + 0.01, b, margin=0.02, resamples=2000)  # the shift inside a wider margin
    assert outcome(wide) == "equivalent" and "negligible" in verdict("a", "b", wide)


def test_two_cases_are_inconclusive_whatever_the_difference_with_an_infinite_mde():
    for shift in (0.0, 0.001, 0.05):
        b = np.array([0.9, 0.8])
        c = paired_comparison(b + shift, b, margin=0.005, resamples=2000)
        assert outcome(c) == "inconclusive" and math.isinf(c.mde)
        assert "inconclusive: no difference can be detected with 2 test cases" in verdict("a", "b", c)


def test_the_mde_follows_the_paired_t_power_formula_and_shrinks_with_cases():
    rng = np.random.default_rng(1)
    spread = rng.normal(0, 0.01, size=40)
    per_case = spread[:10]
    expected = (sps.t.ppf(0.975, 9) + sps.t.ppf(0.8, 9)) * np.std(per_case, ddof=1) / np.sqrt(10)
    assert minimum_detectable_difference(per_case) == pytest.approx(expected)
    assert minimum_detectable_difference(spread) < minimum_detectable_difference(per_case)


def test_noise_with_enough_cases_is_inconclusive_and_names_its_mde():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.8, 0.9, size=12)
    a = b + rng.normal(0, 0.03, size=12)  # spread far beyond the margin
    c = paired_comparison(a, b, margin=0.005, resamples=2000)
    assert outcome(c) == "inconclusive" and np.isfinite(c.mde) and c.mde > 0.005
    assert f"differences below {100 * c.mde:.2f} points (the MDE at 80 % power)" in verdict("a", "b", c)


def test_the_margins_come_from_the_defaults_and_the_config():
    assert equivalence_margins()["dice"] == 0.005 and equivalence_margins()["hd95_mm"] == 1.0
    assert equivalence_margins({"dice": 0.01})["dice"] == 0.01
    with pytest.raises(ValueError, match="unknown metric 'jaccard'"):
        equivalence_margins({"jaccard": 0.1})
    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    assert equivalence_margins(config["stats"]["equivalence_margin"]) == EQUIVALENCE_MARGINS


def test_the_report_words_the_four_outcomes():
    from varprune.report.tables import verdict_table

    b = np.linspace(0.80, 0.90, 8)
    noise = np.random.default_rng(3).normal(0, 0.03, size=8)
    dice = {"variable": b + 0.01, "fixed": b, "global": b, "random": b + noise}
    table = pd.DataFrame([{"method": method, "budget": 0.5, "replicate": 0, "case": f"c{k}", "dice": v}
                          for method, values in dice.items() for k, v in enumerate(values)])
    pairs = [("variable", "fixed"), ("fixed", "variable"), ("fixed", "global"), ("fixed", "random")]
    out = comparison_rows(table, pairs, ["dice"], resamples=2000)
    assert out.outcome.tolist() == ["a_better", "b_better", "equivalent", "inconclusive"]
    words = verdict_table(out)["50.0 % of MACs removed"].tolist()
    assert words[:3] == ["variable better", "variable better", "equivalent within ±0.50 points"]
    assert words[3].startswith("inconclusive: differences below ")
    assert words[3].endswith(" points cannot be seen")
    # a test that rejects while the interval still reaches 0: the words say the two disagree
    split = out.iloc[[3]].assign(outcome="inconclusive", p_adjusted=0.01, ci_low=-0.0001, ci_high=0.0069)
    assert verdict_table(split)["50.0 % of MACs removed"].tolist() == [
        "inconclusive: the test (adjusted p 0.01) and the interval [-0.01, +0.69] points disagree"]
