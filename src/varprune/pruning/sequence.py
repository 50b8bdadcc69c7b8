"""From group scores to how many channels each layer loses, for every pruning method.

`variable` (the paper's method):
1. Layer significance per block type (MSA, FFN). Default aggregate `top_share`: normalise the
   scores within the block type (divide by their mean over the whole model), take the model's
   top `top_fraction` groups of that type, and count which share of them sits in each layer.
   That turns "the crucial parameters are spread unevenly over depth" into one number per layer.
2. Normalise over depth (a distribution summing to 1), optionally smooth along depth (moving
   average of `smooth` layers), and quantise into `levels` levels (0 = least significant):
   the hierarchical sequence.
3. Rates: rate(level) = clip(t + spread·(½ − level/(levels−1)), rate_min, rate_max), decreasing
   with significance. The overall level t is found by bisection so that the cycle removes its
   MAC budget; MSA and FFN have their own level sequences and share t.
`fixed` (the paper's baseline): one rate t for every layer and block, solved the same way.
`global` (Torch-Pruning's global pruning): group scores normalised by their layer-and-block
   mean, one ranking across all layers, the lowest removed until the budget is met.
`random` (the control): per-layer rates t + spread·(½ − u) with u drawn uniformly per layer and
   block (seeded): the same spread of rates as `variable`, allocated without information, solved
   to the same budget. An informed allocation that cannot beat it has shown nothing.

Rates are relative to a layer's current width. Minimum widths are never crossed. MSA channels
are removed as head dims (the same number in every head of a layer, as SABlock requires) or,
with `msa_unit: head`, as whole heads.

`pruning.scope` decoder adds the decoder's channel groups (SETR's head stages, UNETR's
convolutional groups) as a third block type ("head"), `embedding` the embedding width as a fourth
(one member), `all` both; each method treats them as it treats MSA and FFN: `variable` gives the
decoder groups their own significance and level sequence (the single embedding width is the top
level of its own sequence), `fixed` one rate, `random` a draw per group, `global` ranks
their channels too. Budgets stay shares of the dense MACs, counted exactly (a narrower
residual stream makes every layer's channels cheaper).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.ndimage import uniform_filter1d

from varprune.core.methods import PRUNING_METHODS
from varprune.model.network import ModelSpec
from varprune.pruning.budget import (  # noqa: F401  (re-exported: the solvers' public names)
    BudgetError,
    Counts,
    LayerCounts,
    OuterCounts,
    SequenceSettings,
    counts_for_rates,
    msa_channels_removed,
    outer_of,
    outer_sizes,
    removed_macs,
    round_counts,
    spec_macs,
    whole_groups,
    widths_after,
)
from varprune.pruning.groups import BLOCKS, LayerPlan, OuterPlan, Plans, Scores


@dataclass
class Sequence:
    """Per layer and block: significance, normalised weight, level, rate (NaN where unused)."""

    significance: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]
    level: dict[str, np.ndarray]
    rate: dict[str, np.ndarray]


# ---------------------------------------------------------------- significance -> sequence


def layer_significance(scores: Scores, n_layers: int, aggregate: str, top_fraction: float,
                       outer: dict[str, int] | None = None) -> dict:
    """One significance value per layer for each block type (and per member of each `outer`
    block type: {block: members}, e.g. the head stages)."""
    result = {}
    sizes = {**{b: n_layers for b in BLOCKS}, **(outer or {})}
    for block, members in sizes.items():
        per_layer = [scores[(i, block)].flatten().double() for i in range(members)]
        everything = torch.cat(per_layer)
        normalised = [s / everything.mean().clamp_min(1e-30) for s in per_layer]
        if aggregate == "top_share":
            flat = torch.cat(normalised)
            k = max(1, round(top_fraction * flat.numel()))
            threshold = torch.topk(flat, k).values.min()
            counts = np.array([float((s >= threshold).sum()) for s in normalised])
            values = counts / counts.sum()
        elif aggregate == "mean":
            values = np.array([float(s.mean()) for s in normalised])
        elif aggregate == "sum":
            values = np.array([float(s.sum()) for s in normalised])
        else:
            raise ValueError(f"unknown pruning.aggregate {aggregate!r}")
        result[block] = values
    return result


def smooth_along_depth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over `window` neighbouring layers (edges padded by repetition)."""
    if window <= 1:
        return values.copy()
    return uniform_filter1d(np.asarray(values, dtype=float), size=window, mode="nearest")


def quantise(weights: np.ndarray, levels: int) -> np.ndarray:
    """Levels 0..levels-1 by value: 0 = least significant. Equal weights share the top level."""
    span = weights.max() - weights.min()
    if span <= 1e-12:
        return np.full(len(weights), levels - 1, dtype=int)
    scaled = (weights - weights.min()) / span
    return np.minimum(levels - 1, np.floor(scaled * levels)).astype(int)


def hierarchical_sequence(significance: np.ndarray,
                          settings: SequenceSettings) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (and smoothed) weight over depth, and its quantised levels."""
    total = significance.sum()
    weight = significance / total if total > 0 else np.full(len(significance), 1 / len(significance))
    weight = smooth_along_depth(weight, settings.smooth)
    return weight, quantise(weight, settings.levels)


def level_rates(levels: np.ndarray, t: float, settings: SequenceSettings) -> np.ndarray:
    """Rates for levels at overall level t: higher level (more significant) -> lower rate."""
    if settings.levels > 1:
        offset = settings.spread * (0.5 - levels / (settings.levels - 1))
    else:
        offset = np.zeros(len(levels))
    return np.clip(t + offset, settings.rate_min, settings.rate_max)


# ---------------------------------------------------------------- rates -> counts -> MACs


def solve_level(spec: ModelSpec, budget: int, rates_at, settings: SequenceSettings,
                what: str) -> tuple[float, list[LayerCounts]]:
    """Smallest overall level t whose counts remove at least `budget` MACs (bisection)."""
    low, high = -1.0 - settings.spread, 1.0 + settings.spread
    best = _counts_at(spec, rates_at(high), settings)
    if removed_macs(spec, best) < budget:
        raise BudgetError(
            f"{what}: removing {budget:,} MACs needs more than the rate bound rate_max="
            f"{settings.rate_max} and the minimum widths allow ({removed_macs(spec, best):,} at most)")
    if budget <= 0:
        return low, _counts_at(spec, rates_at(low), settings)
    for _ in range(60):
        mid = (low + high) / 2
        counts = _counts_at(spec, rates_at(mid), settings)
        if removed_macs(spec, counts) >= budget:
            high, best = mid, counts
        else:
            low = mid
    return high, _refine(spec, _counts_at(spec, rates_at(low), settings), best, budget)


def _counts_at(spec: ModelSpec, rates: tuple, settings: SequenceSettings) -> Counts:
    """Counts for `rates_at(t)`'s (msa, ffn) or (msa, ffn, {outer block: rates})."""
    msa, ffn, *outer = rates
    return counts_for_rates(spec, msa, ffn, settings, outer[0] if outer else None)


def _rates(blocks: dict[str, np.ndarray]) -> tuple:
    """(msa, ffn, outer) from rates per block type."""
    return blocks["msa"], blocks["ffn"], {b: r for b, r in blocks.items() if b not in BLOCKS}


def _refine(spec: ModelSpec, below: list[LayerCounts], above: list[LayerCounts],
            budget: int) -> list[LayerCounts]:
    """Step from the counts just below the budget towards those just above, one layer and
    block at a time, and stop as soon as the budget is met.

    Layers that share a rate cross a rounding step at the same level t, so the counts just
    above the budget can overshoot it by several layers' worth; this keeps the overshoot
    to one channel unit of one layer.
    """
    low_outer, high_outer = outer_of(below), outer_of(above)
    result = Counts([LayerCounts(c.heads, c.dims, c.ffn) for c in below],
                    OuterCounts(list(low_outer.head), low_outer.embed))
    if removed_macs(spec, result) >= budget:
        return result
    for i, (low, high) in enumerate(zip(below, above, strict=True)):
        for name in ("heads", "dims", "ffn"):
            if getattr(high, name) != getattr(low, name):
                setattr(result[i], name, getattr(high, name))
                if removed_macs(spec, result) >= budget:
                    return result
    for s, count in enumerate(high_outer.head):
        if s < len(result.outer.head) and count != result.outer.head[s]:
            result.outer.head[s] = count
            if removed_macs(spec, result) >= budget:
                return result
    return above


def variable_counts(spec: ModelSpec, scores: Scores, budget: int, settings: SequenceSettings,
                    seed: int = 0) -> tuple[list[LayerCounts], Sequence]:
    """The paper's method: significance -> hierarchical sequence -> variable rates (`seed`:
    unused, the allocation is deterministic)."""
    n = len(spec.layers)
    outer = outer_sizes(spec, settings.outer_blocks)
    significance = layer_significance(scores, n, settings.aggregate, settings.top_fraction, outer)
    weights, levels = {}, {}
    for block in significance:
        weights[block], levels[block] = hierarchical_sequence(significance[block], settings)

    def rates_at(t):
        return _rates({b: level_rates(levels[b], t, settings) for b in levels})

    t, counts = solve_level(spec, budget, rates_at, settings, "pruning.cycle_targets (variable)")
    return counts, Sequence(significance, weights, levels, {b: level_rates(levels[b], t, settings)
                                                            for b in levels})


def fixed_counts(spec: ModelSpec, scores: Scores, budget: int, settings: SequenceSettings,
                 seed: int = 0) -> tuple[list[LayerCounts], Sequence]:
    """The baseline: one rate for every layer and block (`seed`: unused)."""
    n = len(spec.layers)
    sizes = {**{b: n for b in BLOCKS}, **outer_sizes(spec, settings.outer_blocks)}
    significance = layer_significance(scores, n, settings.aggregate, settings.top_fraction,
                                      outer_sizes(spec, settings.outer_blocks))

    def per_block(t):
        rate = float(np.clip(t, settings.rate_min, settings.rate_max))
        return {b: np.full(m, rate) for b, m in sizes.items()}

    t, counts = solve_level(spec, budget, lambda t: _rates(per_block(t)), settings,
                            "pruning.cycle_targets (fixed)")
    return counts, _uninformed_sequence(significance, sizes, per_block(t))


def _uninformed_sequence(significance: dict, sizes: dict[str, int], rates: dict) -> Sequence:
    """The sequence of a method without weights or levels (fixed, global, random)."""
    return Sequence(significance, {b: np.full(m, np.nan) for b, m in sizes.items()},
                    {b: np.zeros(m, int) for b, m in sizes.items()}, rates)


def global_counts(spec: ModelSpec, scores: Scores, budget: int, settings: SequenceSettings,
                  seed: int = 0) -> tuple[list[LayerCounts], Sequence]:
    """One ranking of layer-normalised group scores across the model; lowest go first, until
    the exact MAC count meets the budget (`seed`: unused). With `round_to`, each group's count
    is rounded as the rate solvers round theirs (monotone, so the search still holds)."""
    n = len(spec.layers)
    units = _global_units(spec, scores, settings)
    units.sort(key=lambda u: u[0])

    def prefix(k: int) -> Counts:
        counts = Counts([LayerCounts() for _ in range(n)],
                        OuterCounts([0] * len(spec.stages) if "head" in settings.outer_blocks else []))
        for _, i, kind in units[:k]:
            if kind == "head":
                counts.outer.head[i] += 1
            elif kind == "embed":
                counts.outer.embed += 1
            else:
                setattr(counts[i], kind, getattr(counts[i], kind) + 1)
        return round_counts(spec, counts, settings)

    low, high = 0, len(units)  # the smallest prefix that meets the budget (removal grows with k)
    if removed_macs(spec, prefix(high)) < budget:
        raise BudgetError(f"pruning.cycle_targets (global): removing {budget:,} MACs needs more than "
                          f"the minimum widths allow ({removed_macs(spec, prefix(high)):,} at most)")
    while low < high:
        mid = (low + high) // 2
        if removed_macs(spec, prefix(mid)) >= budget:
            high = mid
        else:
            low = mid + 1
    counts = prefix(low)
    outer = outer_sizes(spec, settings.outer_blocks)
    significance = layer_significance(scores, n, settings.aggregate, settings.top_fraction, outer)
    rates = {
        "msa": np.array([msa_channels_removed(layer, c) / layer.inner
                         for layer, c in zip(spec.layers, counts, strict=True)]),
        "ffn": np.array([c.ffn / layer.ffn for layer, c in zip(spec.layers, counts, strict=True)]),
    }
    if "head" in outer:
        rates["head"] = np.array([c / w for c, w in zip(counts.outer.head, spec.stages, strict=True)])
    if "embed" in outer:
        rates["embed"] = np.array([counts.outer.embed / spec.width])
    return counts, _uninformed_sequence(significance, {**{b: n for b in BLOCKS}, **outer}, rates)


def _global_units(spec: ModelSpec, scores: Scores, settings: SequenceSettings) -> list[tuple]:
    """(score normalised by its layer's (or stage's) mean, index, kind) of every removable unit
    above the minimum widths: heads or head-dim ranks, FFN channels, head stage and embedding
    channels."""
    units = []
    for i, layer in enumerate(spec.layers):
        msa = scores[(i, "msa")].double()
        msa = msa / msa.mean().clamp_min(1e-30)
        if settings.msa_unit == "head":
            head_scores = torch.sort(msa.mean(dim=1)).values
            units += [(float(s), i, "heads") for s in head_scores[: layer.heads - settings.min_heads]]
        else:
            ranked = torch.sort(msa, dim=1).values.mean(dim=0)  # r-th lowest dim, over heads
            units += [(float(s), i, "dims") for s in ranked[: layer.head_dim - settings.min_head_dim]]
        ffn = scores[(i, "ffn")].double()
        ffn = torch.sort(ffn / ffn.mean().clamp_min(1e-30)).values
        units += [(float(s), i, "ffn") for s in ffn[: layer.ffn - settings.min_ffn]]
    floors = {"head": settings.min_head_channels, "embed": settings.min_embed}
    whole = whole_groups(spec, settings)
    for block, members in outer_sizes(spec, settings.outer_blocks).items():
        for i in range(members):
            if block == "head" and i in whole:
                continue
            values = scores[(i, block)].double()
            values = torch.sort(values / values.mean().clamp_min(1e-30)).values
            units += [(float(s), i, block) for s in values[: len(values) - floors[block]]]
    return units


def random_counts(spec: ModelSpec, scores: Scores, budget: int, settings: SequenceSettings,
                  seed: int = 0) -> tuple[list[LayerCounts], Sequence]:
    """The control: variable's spread of rates, assigned to layers at random (seeded)."""
    n = len(spec.layers)
    outer = outer_sizes(spec, settings.outer_blocks)
    sizes = {**{b: n for b in BLOCKS}, **outer}
    significance = layer_significance(scores, n, settings.aggregate, settings.top_fraction, outer)
    rng = np.random.default_rng(seed)
    draws = {block: rng.uniform(0.0, 1.0, m) for block, m in sizes.items()}  # msa, ffn first

    def per_block(t):
        return {b: np.clip(t + settings.spread * (0.5 - draws[b]), settings.rate_min, settings.rate_max)
                for b in sizes}

    t, counts = solve_level(spec, budget, lambda t: _rates(per_block(t)), settings,
                            "pruning.cycle_targets (random)")
    return counts, _uninformed_sequence(significance, sizes, per_block(t))


def plan_counts(method: str, spec: ModelSpec, scores: Scores, budget: int,
                settings: SequenceSettings, seed: int = 0) -> tuple[list[LayerCounts], Sequence]:
    """Counts per layer for `method`, by the solver its registration names
    (varprune.core.methods); `seed` is the cycle's seed (the random control draws with it).
    With `outer_width: shared` and a scope beyond the transformer, the outer widths come from
    `shared_outer_counts` and the method allocates only the rest of the budget."""
    if method not in PRUNING_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(PRUNING_METHODS)}")
    solve = PRUNING_METHODS[method].solve()
    if settings.outer_width == "own" or not settings.outer_blocks:
        return solve(spec, scores, budget, settings, seed=seed)
    outer, outer_sequence = shared_outer_counts(spec, scores, budget, settings)
    narrowed = widths_after(spec, Counts([LayerCounts() for _ in spec.layers], outer))
    rest = budget - (spec_macs(spec) - spec_macs(narrowed))
    inner = replace(settings, scope="transformer")
    counts, sequence = solve(narrowed, scores, rest, inner, seed=seed)
    merged = Counts(counts, OuterCounts(list(outer.head), outer.embed))
    for block in outer_sequence.rate:
        if block not in BLOCKS:
            for field in ("significance", "weight", "level", "rate"):
                getattr(sequence, field)[block] = getattr(outer_sequence, field)[block]
    return merged, sequence


def shared_outer_counts(spec: ModelSpec, scores: Scores, budget: int,
                        settings: SequenceSettings) -> tuple[OuterCounts, Sequence]:
    """The widths outside the transformer blocks every method gets under `outer_width: shared`:
    those of the fixed rate that meets the whole budget (one rate over every group, the
    allocation that uses no significance), and that rate's sequence entries for the report."""
    counts, sequence = fixed_counts(spec, scores, budget, replace(settings, outer_width="own"))
    return outer_of(counts), sequence


# ---------------------------------------------------------------- counts -> concrete groups


def select_groups(spec: ModelSpec, scores: Scores, counts: list[LayerCounts]) -> Plans:
    """The lowest-scoring groups of each layer (head stage, embedding width), as many as its
    counts say."""
    outer = outer_of(counts)
    plans = Plans(outer=OuterPlan(
        head=[sorted(torch.argsort(scores[(s, "head")])[:c].tolist()) for s, c in enumerate(outer.head)],
        embed=sorted(torch.argsort(scores[(0, "embed")])[: outer.embed].tolist()) if outer.embed else []))
    for i, (layer, c) in enumerate(zip(spec.layers, counts, strict=True)):
        msa = scores[(i, "msa")]
        heads = torch.argsort(msa.sum(dim=1))[: c.heads].tolist() if c.heads else []
        kept = [h for h in range(layer.heads) if h not in heads]
        dims = {h: sorted(torch.argsort(msa[h])[: c.dims].tolist()) for h in kept} if c.dims else {}
        ffn = sorted(torch.argsort(scores[(i, "ffn")])[: c.ffn].tolist()) if c.ffn else []
        plans.append(LayerPlan(sorted(heads), dims, ffn))
    return plans
