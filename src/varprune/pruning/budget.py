"""Budget arithmetic of the rate solvers, without torch: how many channels a layer loses at a
rate within the minimum widths, what that removes in MACs, and how far cycles can go.

The solvers (`varprune.pruning.sequence`) and the workflow's parse-time check of
`pruning.cycle_targets` (`check_cycle_targets`) both call these functions, so a target the
check accepts is one the solver can meet, and the other way round.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np

from varprune.model import macs
from varprune.model.spec import LayerSpec, ModelSpec


class BudgetError(ValueError):
    """The MAC budget cannot be met within the rate bounds and minimum widths."""


@dataclass(frozen=True)
class SequenceSettings:
    """The part of the `pruning` config slice that decides rates."""

    aggregate: str = "top_share"
    top_fraction: float = 0.3
    smooth: int = 1
    levels: int = 4
    spread: float = 0.4
    rate_min: float = 0.0
    rate_max: float = 0.9
    msa_unit: str = "dim"
    min_head_dim: int = 2
    min_heads: int = 1
    min_ffn: int = 8
    scope: str = "transformer"
    min_head_channels: int = 2
    min_embed: int = 8
    min_group_share: float = 0.005
    outer_width: str = "shared"
    round_to: int = 1

    def __post_init__(self) -> None:
        if self.round_to < 1:
            raise ValueError(f"pruning.round_to must be 1 or more, got {self.round_to}")
        if self.scope not in SCOPES:
            raise ValueError(f"pruning.scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.outer_width not in OUTER_WIDTHS:
            raise ValueError(f"pruning.outer_width must be one of {', '.join(OUTER_WIDTHS)}, "
                             f"got {self.outer_width!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> SequenceSettings:
        return cls(**{k: v for k, v in cfg.items() if k in cls.__dataclass_fields__})

    @property
    def outer_blocks(self) -> tuple[str, ...]:
        """The groups outside the transformer blocks this scope prunes."""
        return SCOPES[self.scope]


# What each pruning.scope prunes beyond MSA and FFN: the decoder's channel groups (SETR's head
# stages, UNETR's convolutional encoder/decoder groups), the embedding width.
SCOPES = {"transformer": (), "decoder": ("head",), "embedding": ("embed",), "all": ("head", "embed")}

# How the widths outside the transformer blocks (decoder groups, embedding) are chosen: `shared`,
# the same for every method (fixed's one rate at the cycle's budget), so that methods differ only
# in how they allocate MSA and FFN widths, the paper's claim; `own`, each method's own allocation.
OUTER_WIDTHS = ("shared", "own")


@dataclass
class LayerCounts:
    """What one layer loses: heads, dims per head, FFN channels."""

    heads: int = 0
    dims: int = 0
    ffn: int = 0


@dataclass
class OuterCounts:
    """What leaves outside the transformer blocks: channels per decoder group (SETR head stage,
    UNETR group), and of the residual stream (the embedding width)."""

    head: list[int] = field(default_factory=list)
    embed: int = 0


class Counts(list):
    """Per-layer `LayerCounts`, plus `outer` (`OuterCounts`; nothing unless the scope says so).
    A list, so that code reading layers (zip with spec.layers) needs nothing else."""

    def __init__(self, layers=(), outer: OuterCounts | None = None) -> None:
        super().__init__(layers)
        self.outer = outer if outer is not None else OuterCounts()


def outer_of(counts: list[LayerCounts]) -> OuterCounts:
    """The outer counts of `counts` (none for a plain list)."""
    return getattr(counts, "outer", None) or OuterCounts()


def outer_sizes(spec: ModelSpec, blocks) -> dict[str, int]:
    """Members of each outer block: decoder groups, and one embedding width."""
    return {b: (len(spec.stages) if b == "head" else 1) for b in blocks}


def counts_for_rates(spec: ModelSpec, msa_rates: np.ndarray, ffn_rates: np.ndarray,
                     settings: SequenceSettings, outer_rates: dict | None = None) -> Counts:
    """Channels each layer (and, with `outer_rates`, each head stage and the embedding width)
    loses at the given rates, within the minimum widths and kept at multiples of `round_to`."""
    counts = Counts()
    for layer, r_msa, r_ffn in zip(spec.layers, msa_rates, ffn_rates, strict=True):
        c = LayerCounts()
        if settings.msa_unit == "head":
            c.heads = min(int(round(r_msa * layer.heads)), layer.heads - settings.min_heads)
        else:
            c.dims = min(int(round(r_msa * layer.head_dim)), layer.head_dim - settings.min_head_dim)
        c.ffn = min(int(round(r_ffn * layer.ffn)), layer.ffn - settings.min_ffn)
        c.heads, c.dims, c.ffn = max(0, c.heads), max(0, c.dims), max(0, c.ffn)
        counts.append(c)
    rates = outer_rates or {}
    if "head" in rates:
        whole = whole_groups(spec, settings)
        counts.outer.head = [
            0 if g in whole else max(0, min(int(round(r * w)), w - settings.min_head_channels))
            for g, (r, w) in enumerate(zip(rates["head"], spec.stages, strict=True))]
    if "embed" in rates:
        counts.outer.embed = max(0, min(int(round(float(rates["embed"][0]) * spec.width)),
                                        spec.width - settings.min_embed))
    return round_counts(spec, counts, settings)


def rounded_removal(width: int, count: int, floor: int, step: int) -> int:
    """`count` moved so that the width kept is a multiple of `step` (or the whole `width`): the
    allowed width nearest to `width - count`, the wider one on a tie, never below `floor`.
    Monotone in `count`, so a solver that searches over counts still finds the smallest that
    meets its budget."""
    if step <= 1 or count <= 0:
        return count
    kept = width - count
    lowest = -(-max(floor, step) // step) * step  # the smallest multiple allowed
    below = kept // step * step
    candidates = [width] + [m for m in (below, below + step, lowest) if lowest <= m < width]
    return width - min(candidates, key=lambda m: (abs(m - kept), -m))


def msa_step(layer: LayerSpec, settings: SequenceSettings) -> int:
    """The step of the MSA unit that keeps the inner width (heads x head dim) a multiple of
    `round_to`: head dims in steps of round_to / gcd(heads, round_to), or heads in steps of
    round_to / gcd(head dim, round_to)."""
    other = layer.heads if settings.msa_unit == "dim" else layer.head_dim
    return settings.round_to // math.gcd(other, settings.round_to)


def round_counts(spec: ModelSpec, counts: Counts, settings: SequenceSettings) -> Counts:
    """`counts` with every width left a multiple of `pruning.round_to` (`rounded_removal`): the
    FFN width, the MSA inner width, each decoder group, the embedding width. For kernels that
    prefer multiples of their vector length; measured, onnxruntime gained nothing and PyTorch's
    convolution kernels do not change with it, so the default is 1 (docs/scopes.md)."""
    if settings.round_to <= 1:
        return counts
    step = settings.round_to
    for layer, c in zip(spec.layers, counts, strict=True):
        if settings.msa_unit == "head":
            c.heads = rounded_removal(layer.heads, c.heads, settings.min_heads, msa_step(layer, settings))
        else:
            c.dims = rounded_removal(layer.head_dim, c.dims, settings.min_head_dim, msa_step(layer, settings))
        c.ffn = rounded_removal(layer.ffn, c.ffn, settings.min_ffn, step)
    outer = counts.outer
    outer.head = [rounded_removal(w, c, settings.min_head_channels, step)
                  for c, w in zip(outer.head, spec.stages, strict=False)]
    if outer.embed:
        outer.embed = rounded_removal(spec.width, outer.embed, settings.min_embed, step)
    return counts


def group_shares(spec: ModelSpec) -> list[float]:
    """Share of the dense model's MACs that each decoder channel group's channels carry (at dense
    widths: a group's MACs grow linearly with its width, its neighbours held)."""
    dense = spec.dense()
    total = spec_macs(dense)
    shares = []
    for g, width in enumerate(dense.stages):
        narrower = [w - 1 if i == g else w for i, w in enumerate(dense.stages)]
        shares.append((total - spec_macs(dense.with_widths(dense.width, narrower))) * width / total)
    return shares


_SHARES: dict[str, list[float]] = {}


def whole_groups(spec: ModelSpec, settings: SequenceSettings) -> frozenset[int]:
    """Decoder groups every method leaves whole: those whose channels carry less than
    `min_group_share` of the dense MACs. Cutting them cannot move a MAC budget, and on SETR's
    head (0.1 % per stage) it cost 10 to 85 Dice points (docs/scopes.md)."""
    if settings.min_group_share <= 0:
        return frozenset()
    key = json.dumps(spec.dense().to_dict(), sort_keys=True)
    if key not in _SHARES:
        _SHARES[key] = group_shares(spec)
    return frozenset(g for g, share in enumerate(_SHARES[key]) if share < settings.min_group_share)


def whole_groups_notice(spec: ModelSpec, settings: SequenceSettings) -> str | None:
    """A line for the user when the scope prunes the decoder but some of its groups stay whole
    (None otherwise): with SETR's head every group does, and `decoder` prunes what `transformer`
    does."""
    if "head" not in settings.outer_blocks:
        return None
    whole = sorted(whole_groups(spec, settings))
    if not whole:
        return None
    every = " (every decoder group)" if len(whole) == len(spec.stages) else ""
    names = ", ".join(spec.stage_names[g] for g in whole)
    return (f"pruning.scope {settings.scope}: the {spec.arch} decoder groups {names}{every} each carry "
            f"less than pruning.min_group_share ({settings.min_group_share:.2%}) of the dense MACs and "
            "stay whole (docs/scopes.md)")


def full_rates(spec: ModelSpec, settings: SequenceSettings) -> tuple:
    """(msa, ffn, outer) rates at `rate_max` for every group the scope prunes."""
    full = np.full(len(spec.layers), settings.rate_max)
    outer = {b: np.full(n, settings.rate_max) for b, n in outer_sizes(spec, settings.outer_blocks).items()}
    return full, full, outer


def msa_channels_removed(layer: LayerSpec, c: LayerCounts) -> int:
    return layer.inner - (layer.heads - c.heads) * (layer.head_dim - c.dims)


def removed_macs(spec: ModelSpec, counts: list[LayerCounts]) -> int:
    """MACs the counts remove (analytic; the same matmuls FlopCounterMode counts). Exact also
    when the residual width shrinks, which makes every layer's channels cheaper."""
    outer = outer_of(counts)
    if not outer.embed and not any(outer.head):
        per_msa = macs.msa_channel_macs(spec.img_size, spec.patch, spec.width)
        per_ffn = macs.ffn_channel_macs(spec.img_size, spec.patch, spec.width)
        return sum(msa_channels_removed(layer, c) * per_msa + c.ffn * per_ffn
                   for layer, c in zip(spec.layers, counts, strict=True))
    return spec_macs(spec) - spec_macs(widths_after(spec, counts))


def widths_after(spec: ModelSpec, counts: list[LayerCounts]) -> ModelSpec:
    """The spec once every layer (and the head and embedding, if counted) has lost its counts
    (what the surgery will produce)."""
    layers = spec.with_layers([
        replace(layer, heads=layer.heads - c.heads, head_dim=layer.head_dim - c.dims, ffn=layer.ffn - c.ffn)
        for layer, c in zip(spec.layers, counts, strict=True)])
    outer = outer_of(counts)
    if not outer.embed and not any(outer.head):
        return layers
    head = outer.head or [0] * len(spec.stages)
    stages = [w - c for w, c in zip(spec.stages, head, strict=True)]
    return layers.with_widths(spec.width - outer.embed, stages)


def spec_macs(spec: ModelSpec) -> int:
    """The whole model's MACs by the closed-form count (varprune.model.macs)."""
    return macs.model_macs(spec.to_dict(), [(layer.inner, layer.ffn) for layer in spec.layers])


def reachable_per_cycle(spec: ModelSpec, cycles: int, settings: SequenceSettings) -> list[float]:
    """The largest share of `spec`'s MACs removed after each of `cycles` cycles: every layer at
    `rate_max` of its current width in every cycle, within the minimum widths (the bound the
    per-layer-rate solvers check before they search; global ranking, bounded by the minimum
    widths alone, can go further, so this is the reach every method has)."""
    dense = spec_macs(spec)
    reach = []
    for _ in range(cycles):
        msa, ffn, outer = full_rates(spec, settings)
        spec = widths_after(spec, counts_for_rates(spec, msa, ffn, settings, outer))
        reach.append(1 - spec_macs(spec) / dense)
    return reach


def reachable_from(spec: ModelSpec, dense: ModelSpec, settings: SequenceSettings) -> float:
    """The largest share of `dense`'s MACs removed after one more cycle from `spec` (every layer
    at `rate_max` of its current width, within the minimum widths)."""
    msa, ffn, outer = full_rates(spec, settings)
    after = widths_after(spec, counts_for_rates(spec, msa, ffn, settings, outer))
    return 1 - spec_macs(after) / spec_macs(dense)


def check_cycle_targets(spec: ModelSpec, targets: list[float], settings: SequenceSettings) -> None:
    """Refuse targets that are not increasing or that no cycle could reach (ValueError naming it)."""
    if any(b <= a for a, b in zip(targets, targets[1:], strict=False)):
        raise ValueError(f"pruning.cycle_targets {targets} must be strictly increasing")
    if settings.rate_min >= settings.rate_max:
        raise ValueError(f"pruning.rate_min {settings.rate_min} must be below pruning.rate_max")
    check_scope(spec, settings)
    dense = spec.layers[0]
    if (settings.min_head_dim > dense.head_dim or settings.min_heads > dense.heads
            or settings.min_ffn > dense.ffn):
        raise ValueError("pruning.min_head_dim, min_heads or min_ffn is larger than the dense model's "
                         f"width (head dim {dense.head_dim}, {dense.heads} heads, FFN {dense.ffn})")
    pruned = sum(macs.layer_macs(spec.img_size, spec.patch, spec.width, layer.inner, layer.ffn)
                 for layer in spec.layers)
    # Outside the transformer scope every part shrinks, so no share is simply out of reach.
    rest = (f" (what pruning.scope transformer leaves alone carries {1 - pruned / spec_macs(spec):.1%})"
            if not settings.outer_blocks else "")
    for k, (target, reachable) in enumerate(zip(targets, reachable_per_cycle(spec, len(targets), settings),
                                                strict=True), start=1):
        if reachable < target:
            raise ValueError(
                f"pruning.cycle_targets: cycle {k} target {target} cannot be reached: with "
                f"pruning.rate_max={settings.rate_max} and the minimum widths, at most {reachable:.1%} of "
                f"the dense MACs can be removed by then{rest}")


def check_scope(spec: ModelSpec, settings: SequenceSettings) -> None:
    """Refuse floors above the dense widths of the groups the scope prunes."""
    if "head" in settings.outer_blocks and settings.min_head_channels > min(spec.dense_stages):
        raise ValueError(f"pruning.min_head_channels {settings.min_head_channels} is larger than a decoder "
                         f"channel group ({spec.dense_stages})")
    if "embed" in settings.outer_blocks and settings.min_embed > spec.hidden:
        raise ValueError(f"pruning.min_embed {settings.min_embed} is larger than model.hidden {spec.hidden}")
