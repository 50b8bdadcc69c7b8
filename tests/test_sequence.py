"""Variable, fixed and global rate sequences: budgets, monotonicity, levels, bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from varprune.model.network import ModelSpec
from varprune.pruning.groups import layer_macs
from varprune.pruning.sequence import (
    BudgetError,
    SequenceSettings,
    fixed_counts,
    global_counts,
    hierarchical_sequence,
    level_rates,
    plan_counts,
    quantise,
    random_counts,
    removed_macs,
    select_groups,
    variable_counts,
)

SPEC = ModelSpec(arch="unetr", patch=16, input_size=128, hidden=384, ffn=1536, heads=6)  # a ViT-S UNETR


def random_scores(seed: int, spec: ModelSpec = SPEC):
    g = torch.Generator().manual_seed(seed)
    scores = {}
    for i, layer in enumerate(spec.layers):
        # Layers differ in how significant they are, as measured models do.
        depth_factor = float(torch.rand(1, generator=g)) * 3 + 0.1
        scores[(i, "msa")] = torch.rand(layer.heads, layer.head_dim, generator=g) * depth_factor
        scores[(i, "ffn")] = torch.rand(layer.ffn, generator=g) * float(torch.rand(1, generator=g) * 3 + 0.1)
    return scores


def layers_total(spec: ModelSpec) -> int:
    return sum(layer_macs(spec, ls) for ls in spec.layers)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", [variable_counts, fixed_counts, global_counts, random_counts])
@pytest.mark.parametrize("share", [0.2, 0.45, 0.7])
def test_budget_is_met_within_one_percent(seed, method, share):
    budget = int(share * layers_total(SPEC))
    counts, _ = method(SPEC, random_scores(seed), budget, SequenceSettings())
    removed = removed_macs(SPEC, counts)
    assert budget <= removed <= 1.01 * budget


@pytest.mark.parametrize("seed", range(5))
def test_a_more_significant_layer_never_gets_a_higher_rate(seed):
    counts, seq = variable_counts(SPEC, random_scores(seed), int(0.5 * layers_total(SPEC)),
                                  SequenceSettings())
    for block in ("msa", "ffn"):
        order = np.argsort(seq.weight[block])
        rates = seq.rate[block][order]
        assert np.all(np.diff(rates) <= 1e-12), (seq.weight[block], seq.rate[block])
        assert len(set(seq.level[block])) > 1


def test_fixed_gives_equal_rates():
    counts, seq = fixed_counts(SPEC, random_scores(0), int(0.4 * layers_total(SPEC)), SequenceSettings())
    for block in ("msa", "ffn"):
        assert len(set(seq.rate[block].round(12))) == 1
    # Equal counts, except one channel unit where the budget needs it (integer rounding).
    assert max(c.ffn for c in counts) - min(c.ffn for c in counts) <= 1
    assert max(c.dims for c in counts) - min(c.dims for c in counts) <= 1


def test_levels_and_bounds_hold():
    settings = SequenceSettings(levels=3, rate_min=0.1, rate_max=0.6, spread=0.8)
    weights = np.array([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])
    levels = quantise(weights, 3)
    assert levels.min() == 0 and levels.max() == 2 and np.all(np.diff(levels) >= 0)
    for t in (-2.0, 0.0, 0.3, 2.0):
        rates = level_rates(levels, t, settings)
        assert np.all(rates >= 0.1) and np.all(rates <= 0.6)
    weight, level = hierarchical_sequence(np.array([1.0, 3.0, 2.0, 2.0]), SequenceSettings(levels=4))
    assert weight.sum() == pytest.approx(1.0) and level.tolist() == [0, 3, 2, 2]


def test_minimum_widths_are_never_crossed_and_unreachable_budgets_refused():
    settings = SequenceSettings(min_head_dim=16, min_ffn=512)
    counts, _ = global_counts(SPEC, random_scores(1), int(0.6 * layers_total(SPEC)), settings)
    for layer, c in zip(SPEC.layers, counts, strict=True):
        assert layer.head_dim - c.dims >= 16 and layer.ffn - c.ffn >= 512
    with pytest.raises(BudgetError, match="cycle_targets"):
        variable_counts(SPEC, random_scores(1), int(0.95 * layers_total(SPEC)), settings)
    with pytest.raises(BudgetError, match="cycle_targets"):
        global_counts(SPEC, random_scores(1), int(0.95 * layers_total(SPEC)), settings)


def test_whole_head_unit_and_group_selection_take_the_lowest_scores():
    settings = SequenceSettings(msa_unit="head", min_heads=1)
    scores = random_scores(2)
    counts, _ = variable_counts(SPEC, scores, int(0.4 * layers_total(SPEC)), settings)
    assert any(c.heads for c in counts) and all(c.dims == 0 for c in counts)
    plans = select_groups(SPEC, scores, counts)
    for i, (plan, c) in enumerate(zip(plans, counts, strict=True)):
        head_sums = scores[(i, "msa")].sum(dim=1)
        if c.heads:
            assert max(head_sums[plan.heads]) <= min(
                head_sums[[h for h in range(6) if h not in plan.heads]])
        ffn = scores[(i, "ffn")]
        kept = [j for j in range(len(ffn)) if j not in set(plan.ffn)]
        if plan.ffn:
            assert ffn[plan.ffn].max() <= ffn[kept].min()


def test_random_allocation_is_seeded_spread_like_variable_and_ignores_significance():
    budget = int(0.45 * layers_total(SPEC))
    settings = SequenceSettings()
    first, seq = plan_counts("random", SPEC, random_scores(0), budget, settings, seed=3)
    again, _ = plan_counts("random", SPEC, random_scores(0), budget, settings, seed=3)
    other, _ = plan_counts("random", SPEC, random_scores(0), budget, settings, seed=4)
    assert first == again and first != other
    # The same draw whatever the scores say: the allocation carries no information.
    rescored, _ = plan_counts("random", SPEC, random_scores(1), budget, settings, seed=3)
    assert rescored == first
    for block in ("msa", "ffn"):
        rates = seq.rate[block]
        assert rates.max() - rates.min() <= settings.spread + 1e-12
        assert len(set(rates.round(6))) > 1


def test_depth_smoothing_is_a_centred_moving_average_with_repeated_edges():
    from varprune.pruning.sequence import smooth_along_depth

    spike = np.array([0.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(smooth_along_depth(spike, 3), [0, 1, 1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(smooth_along_depth(np.array([3.0, 0, 0, 0]), 3), [2, 1, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(smooth_along_depth(spike, 1), spike)
