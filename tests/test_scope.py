"""pruning.scope decoder / embedding / all: the decoder's channel groups (SETR's head stages,
UNETR's convolutional encoder/decoder with its concatenated skips) and the embedding width are
pruned like MSA and FFN (scored, allocated by every method, removed physically, rebuilt from the
spec), for both architectures in 2D and 3D."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny_model import tiny_spec
from varprune.engine.cost import macs_full
from varprune.engine.export import export_model
from varprune.model import macs
from varprune.model.network import build_model, count_parameters, load_model, save_checkpoint
from varprune.model.spec import ModelSpec
from varprune.model.widths import parameters_of
from varprune.pruning.budget import (
    SequenceSettings,
    check_cycle_targets,
    group_shares,
    outer_sizes,
    reachable_per_cycle,
    spec_macs,
    whole_groups,
    whole_groups_notice,
)
from varprune.pruning.cycle import CycleSettings, dense_macs, prune_model
from varprune.pruning.groups import LayerPlan, OuterPlan, Plans, outer_groups
from varprune.pruning.sequence import plan_counts, removed_macs, select_groups
from varprune.pruning.significance import make_criterion
from varprune.pruning.surgery import apply_plan, mask_plan

METHODS = ["variable", "fixed", "global", "random"]


ARCHS = ["setr", "unetr"]


def setr(spatial_dims: int = 2, **changes):
    """A tiny SETR whose head reads two layers (the concatenated head input is covered)."""
    return tiny_spec("setr", spatial_dims=spatial_dims, depth=16, heads=4, qkv_bias=True, **changes)


def tiny(arch: str, spatial_dims: int = 2):
    """A tiny SETR (see `setr`) or UNETR (feature size 4: 23 decoder groups of 4 to 32 channels)."""
    if arch == "setr":
        return setr(spatial_dims)
    return tiny_spec("unetr", spatial_dims=spatial_dims, depth=16, heads=4, qkv_bias=True)


def outer_plan(spec, head: bool, embed: bool, seed: int = 0) -> OuterPlan:
    g = torch.Generator().manual_seed(seed)

    def some(width: int) -> list[int]:
        n = int(torch.randint(1, width - 1, (1,), generator=g))
        return sorted(torch.randperm(width, generator=g)[:n].tolist())

    return OuterPlan(head=[some(w) for w in spec.stages] if head else [],
                     embed=some(spec.width) if embed else [])


def layer_plans(spec, seed: int = 0) -> list[LayerPlan]:
    g = torch.Generator().manual_seed(seed)
    return [LayerPlan([], {h: [int(torch.randint(layer.head_dim, (1,), generator=g))]
                           for h in range(layer.heads)},
                      sorted(torch.randperm(layer.ffn, generator=g)[:5].tolist())) for layer in spec.layers]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("what", ["head", "embed", "all"])
def test_removal_equals_masking_outside_the_blocks(arch, spatial_dims, what):
    """Every decoder group (SETR: every head stage, including the one reading the concatenated
    layers; UNETR: every transposed convolution, residual block inside and output, and the four
    skips concatenated after the upsampled channels) and the embedding width: the smaller model
    computes what the masked one does (LayerNorms over kept channels)."""
    torch.manual_seed(0)
    spec = tiny(arch, spatial_dims)
    model = build_model(spec).eval()
    with torch.no_grad():  # non-trivial norms, so that a wrong slice shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    masked = build_model(spec).eval()
    masked.load_state_dict(model.state_dict())
    layers = layer_plans(spec) if what == "all" else [LayerPlan.empty() for _ in spec.layers]
    plans = Plans(layers, outer_plan(spec, head=what != "embed", embed=what != "head"))
    mask_plan(masked, spec, plans)
    new_spec = apply_plan(model, spec, plans)
    x = torch.randn(spec.input_shape(2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an InstanceNorm whose num_features was not narrowed
        diff = (model(x) - masked(x)).abs().max().item()
        changed = (model(x) - build_model(spec).eval()(x)).abs().max().item()
    assert diff <= 1e-5
    assert changed > 1e-3  # the plan did remove something that mattered
    assert count_parameters(model) < count_parameters(build_model(spec))
    if what != "embed":
        assert new_spec.stages == [w - len(r) for w, r in zip(spec.stages, plans.outer.head, strict=True)]
    if what != "head":
        assert new_spec.width == spec.hidden - len(plans.outer.embed)
        assert model.vit.patch_embedding.position_embeddings.shape[-1] == new_spec.width
    rebuilt = build_model(new_spec).eval()
    rebuilt.load_state_dict(model.state_dict())  # the pruned spec alone rebuilds the model
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_outer_couplings_are_exactly_the_parameters_that_depend_on_the_width(arch, spatial_dims):
    """The couplings of a decoder group / the embedding width list every parameter whose shape
    changes with that width, on the axis that changes (checked against the built model)."""
    spec = tiny(arch, spatial_dims)
    wide = dict(build_model(spec).named_parameters())
    for key, (couplings, width) in outer_groups(spec).items():
        stage, block = key
        stages = [w - (1 if s == stage else 0) for s, w in enumerate(spec.stages)]
        narrower = (spec.with_widths(spec.width, stages) if block == "head"
                    else spec.with_widths(width - 1, spec.stages))
        changed = {name: next(d for d in range(p.dim()) if p.shape[d] != wide[name].shape[d])
                   for name, p in build_model(narrower).named_parameters() if p.shape != wide[name].shape}
        listed = {c.path: c.axis for c, _ in parameters_of(build_model(spec), couplings)}
        assert changed == listed, key


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("scope", ["transformer", "decoder", "embedding", "all"])
def test_closed_form_macs_equal_the_counter_for_every_scope(arch, spatial_dims, scope):
    torch.manual_seed(0)
    spec = tiny(arch, spatial_dims)
    model = build_model(spec).eval()
    plans = Plans(layer_plans(spec), outer_plan(spec, head=scope in ("decoder", "all"),
                                                embed=scope in ("embedding", "all")))
    new_spec = apply_plan(model, spec, plans)
    x = torch.zeros(spec.input_shape(1))
    assert macs_full(model, x) == spec_macs(new_spec)
    layers = [(ls.inner, ls.ffn) for ls in new_spec.layers]
    assert macs.model_macs(new_spec.to_dict(), layers) == spec_macs(new_spec)
    assert dense_macs(model, new_spec, macs_full(model, x)) == macs_full(build_model(spec), x)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scope", ["decoder", "embedding", "all"])
def test_every_method_allocates_the_outer_groups_and_meets_the_budget(arch, method, scope):
    torch.manual_seed(0)
    spec = tiny(arch)
    model = build_model(spec).eval()
    batches = [(torch.randn(spec.input_shape(2)), torch.randint(0, 2, (2, 1, *spec.img_size)))]
    sequence = SequenceSettings(scope=scope, min_embed=4)
    # 60 % of the MACs, or less where the scope cannot reach it (the tiny UNETR's transformer
    # holds 10 % of its MACs: with the embedding width alone 14 % can go)
    target = min(0.6, 0.8 * reachable_per_cycle(spec, 1, sequence)[0])
    settings = CycleSettings(target=target, sequence=sequence)
    scores = make_criterion("taylor").score(model, spec, batches)
    assert (0, "head") in scores and (0, "embed") in scores
    before = macs_full(model, torch.zeros(spec.input_shape(1)))
    new_spec, summary = prune_model(model, spec, method, settings, batches, seed=1, scores=scores)
    assert summary["reduction_vs_dense"] >= target - 1e-9
    assert summary["removed"] == summary["planned"] == before - spec_macs(new_spec)
    head, embed = scope in ("decoder", "all"), scope in ("embedding", "all")
    assert (new_spec.stages != spec.stages) == head  # the head lost channels
    assert (new_spec.width < spec.width) == embed
    rows = summary["rows"]
    expected = {"msa", "ffn", *(["head"] if head else []), *(["embed"] if embed else [])}
    assert {r["block"] for r in rows} == expected
    with torch.no_grad():
        assert model(torch.randn(spec.input_shape(1))).shape == (1, 2, *spec.img_size)


@pytest.mark.parametrize("method", METHODS)
def test_decoder_groups_below_the_mac_share_stay_whole_under_every_method(method):
    torch.manual_seed(0)
    spec = setr()  # head stages carrying 5.2 %, 4.2 % and 3.2 % of the dense MACs
    assert [round(share, 3) for share in group_shares(spec)] == [0.052, 0.042, 0.032]
    model = build_model(spec).eval()
    scores = make_criterion("l1").score(model, spec)
    budget = int(0.5 * spec_macs(spec))
    shrunk = {}
    for threshold in (0.0, 0.045):
        settings = SequenceSettings(scope="all", min_embed=4, min_group_share=threshold)
        counts, _ = plan_counts(method, spec, scores, budget, settings, seed=1)
        assert removed_macs(spec, counts) >= budget
        shrunk[threshold] = [g for g, c in enumerate(counts.outer.head) if c > 0]
    assert whole_groups(spec, SequenceSettings(scope="all", min_group_share=0.045)) == {1, 2}
    assert set(shrunk[0.045]) <= {0} and set(shrunk[0.0]) - {0}  # stages 2 and 3 go only without the floor


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scope", ["decoder", "embedding", "all"])
def test_the_outer_widths_are_the_same_for_every_method_unless_each_chooses_its_own(arch, scope):
    """pruning.outer_width shared (the default): every method gets fixed's decoder and embedding
    widths at the budget and allocates only MSA and FFN; own: each its own (the confound the
    shared rule removes: variable's one-member embedding sequence sits at its top level)."""
    torch.manual_seed(0)
    spec = tiny(arch)
    model = build_model(spec).eval()
    scores = make_criterion("taylor").score(
        model, spec, [(torch.randn(spec.input_shape(2)), torch.randint(0, 2, (2, 1, *spec.img_size)))])
    shared = SequenceSettings(scope=scope, min_embed=4, min_group_share=0.0)
    assert shared.outer_width == "shared"
    budget = int(min(0.6, 0.8 * reachable_per_cycle(spec, 1, shared)[0]) * spec_macs(spec))
    outer = {}
    for width in ("shared", "own"):
        settings = SequenceSettings(scope=scope, min_embed=4, min_group_share=0.0, outer_width=width)
        for method in METHODS:
            counts, sequence = plan_counts(method, spec, scores, budget, settings, seed=1)
            assert removed_macs(spec, counts) >= budget
            assert set(sequence.rate) >= {"msa", "ffn"} | set(outer_sizes(spec, settings.outer_blocks))
            outer[width, method] = (list(counts.outer.head), counts.outer.embed)
    assert all(outer["shared", m] == outer["shared", "fixed"] for m in METHODS)
    assert outer["shared", "fixed"] == outer["own", "fixed"]  # fixed is the shared rule itself
    assert any(outer["own", m] != outer["own", "fixed"] for m in METHODS)
    with pytest.raises(ValueError, match="pruning.outer_width"):
        SequenceSettings(scope=scope, outer_width="mine")


def default_spec(*presets: str) -> ModelSpec:
    """The dense spec of config/config.yaml with the presets' `model` keys laid over it."""
    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    for preset in presets:
        config["model"].update(yaml.safe_load((root / preset).read_text()).get("model", {}))
    return ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])


def test_the_default_segmenters_keep_their_cheapest_decoder_groups_whole():
    """SETR's head (about 0.1 % of the MACs per stage) stays whole at the default share; of
    UNETR's 23 groups the four below 0.5 % do (the names docs/scopes.md, gives)."""
    settings = SequenceSettings(scope="all")
    setr_spec = default_spec()
    assert whole_groups(setr_spec, settings) == set(range(len(setr_spec.stages)))
    unetr_spec = default_spec("config/unetr.yaml")
    assert {unetr_spec.stage_names[g] for g in whole_groups(unetr_spec, settings)} == {
        "enc2.up", "enc2.0.mid", "enc2.0", "enc3.up"}
    assert not whole_groups(unetr_spec, SequenceSettings(scope="all", min_group_share=0.0))
    notice = whole_groups_notice(setr_spec, settings)
    assert "stage1, stage2, stage3 (every decoder group)" in notice and "0.50%" in notice
    assert whole_groups_notice(setr_spec, SequenceSettings(scope="embedding")) is None
    assert whole_groups_notice(unetr_spec, SequenceSettings(scope="all", min_group_share=0.0)) is None


def test_transformer_scope_plans_nothing_outside_the_blocks():
    spec = setr()
    model = build_model(spec).eval()
    scores = make_criterion("l1").score(model, spec)
    settings = SequenceSettings()
    budget = int(0.5 * spec_macs(spec))
    for method in METHODS:
        counts, sequence = plan_counts(method, spec, scores, budget, settings)
        plans = select_groups(spec, scores, counts)
        assert not plans.outer.head and not plans.outer.embed
        assert set(sequence.rate) == {"msa", "ffn"}
        assert removed_macs(spec, counts) >= budget


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scope", ["decoder", "embedding", "all"])
def test_a_pruned_checkpoint_of_each_scope_round_trips_through_save_load_and_export(tmp_path, arch, scope):
    torch.manual_seed(0)
    spec = tiny(arch)
    model = build_model(spec).eval()
    new_spec = apply_plan(model, spec, Plans(layer_plans(spec),
                                             outer_plan(spec, head=scope != "embedding",
                                                        embed=scope != "decoder")))
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, new_spec, {})
    loaded, loaded_spec, _ = load_model(path)
    x = torch.randn(spec.input_shape(1))
    assert loaded_spec == new_spec
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for fmt in ("onnx", "torchscript"):
        record = export_model(path, fmt, tmp_path / f"m.{fmt}")
        assert record["max_abs_difference"] <= 1e-4 and (tmp_path / f"m.{fmt}").stat().st_size > 0


def test_unknown_scopes_and_floors_above_the_dense_widths_are_refused():
    with pytest.raises(ValueError, match="min_head_channels"):  # UNETR's narrowest group: feature_size 4
        check_cycle_targets(tiny("unetr"), [0.3], SequenceSettings(scope="decoder", min_head_channels=5))
    check_cycle_targets(tiny("unetr"), [0.3], SequenceSettings(scope="all", min_embed=4))
    with pytest.raises(ValueError, match="pruning.scope must be one of"):
        SequenceSettings(scope="everything")
    with pytest.raises(ValueError, match="min_head_channels"):
        check_cycle_targets(setr(), [0.3], SequenceSettings(scope="decoder", min_head_channels=64))
    with pytest.raises(ValueError, match="embed"):
        setr().with_widths(0, setr().stages)
