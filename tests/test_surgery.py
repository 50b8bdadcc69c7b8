"""Removing channel groups physically computes exactly what masking them does."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_model import ARCHS, tiny_spec
from varprune.model.network import LayerSpec, build_model, count_parameters, load_model, save_checkpoint
from varprune.pruning.groups import COUPLINGS, LayerPlan, coupled_parameters, layer_modules
from varprune.pruning.surgery import apply_plan, mask_plan, remove_transformer_blocks


def plans_for(spec, kind: str, seed: int = 0) -> list[LayerPlan]:
    g = torch.Generator().manual_seed(seed)
    plans = []
    for layer in spec.layers:
        heads = [int(torch.randint(layer.heads, (1,), generator=g))] if kind in ("heads", "all") else []
        kept = [h for h in range(layer.heads) if h not in heads]
        dims = {}
        if kind in ("dims", "all"):
            n = int(torch.randint(1, layer.head_dim - 1, (1,), generator=g))
            dims = {h: sorted(torch.randperm(layer.head_dim, generator=g)[:n].tolist()) for h in kept}
        ffn = []
        if kind in ("ffn", "all"):
            n = int(torch.randint(1, layer.ffn - 1, (1,), generator=g))
            ffn = sorted(torch.randperm(layer.ffn, generator=g)[:n].tolist())
        plans.append(LayerPlan(heads, dims, ffn))
    return plans


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", ["dims", "heads", "ffn", "all"])
def test_removal_equals_masking(arch, spatial_dims, kind):
    torch.manual_seed(0)
    spec = tiny_spec(arch, spatial_dims=spatial_dims, heads=4, qkv_bias=True)
    model = build_model(spec).eval()
    x = torch.randn(spec.input_shape(2))
    plans = plans_for(spec, kind)
    masked = build_model(spec).eval()
    masked.load_state_dict(model.state_dict())
    mask_plan(masked, spec, plans)
    new_spec = apply_plan(model, spec, plans)
    with torch.no_grad():
        diff = (model(x) - masked(x)).abs().max().item()
    assert diff <= 1e-5
    assert count_parameters(model) < count_parameters(masked)
    for layer, new in zip(spec.layers, new_spec.layers, strict=True):
        assert new.scale == layer.scale  # the dense softmax scale is kept


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_model_rebuilds_from_its_checkpoint(tmp_path, arch):
    torch.manual_seed(0)
    spec = tiny_spec(arch, heads=4)
    model = build_model(spec).eval()
    new_spec = apply_plan(model, spec, plans_for(spec, "all", seed=1))
    save_checkpoint(tmp_path / "m.pt", model, new_spec, {})
    loaded, loaded_spec, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(spec.input_shape(1))
    assert loaded_spec == new_spec
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_plan_that_empties_a_layer_is_refused():
    spec = tiny_spec()
    plans = [LayerPlan.empty() for _ in spec.layers]
    plans[0] = LayerPlan([0, 1], {}, [])
    with pytest.raises(ValueError, match="empty layer"):
        apply_plan(build_model(spec), spec, plans)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_removing_every_block_equals_zeroing_their_outputs_and_round_trips(tmp_path, arch, spatial_dims):
    torch.manual_seed(0)
    spec = tiny_spec(arch, spatial_dims=spatial_dims, depth=16)
    model = build_model(spec).eval()
    zeroed = build_model(spec).eval()
    zeroed.load_state_dict(model.state_dict())
    for block in zeroed.vit.blocks:  # the residual stream passes: the blocks add nothing
        for part in (block.attn, block.mlp):
            part.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    new_spec = remove_transformer_blocks(model, spec)
    assert all(layer.inner == 0 and layer.ffn == 0 for layer in new_spec.layers)
    x = torch.randn(spec.input_shape(2))
    with torch.no_grad():
        assert (model(x) - zeroed(x)).abs().max().item() <= 1e-6
    assert count_parameters(model) < count_parameters(zeroed)
    save_checkpoint(tmp_path / "off.pt", model, new_spec, {})
    loaded, loaded_spec, _ = load_model(tmp_path / "off.pt")
    assert loaded_spec == new_spec
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_group_couplings_are_exactly_the_parameters_that_depend_on_the_width(arch, qkv_bias):
    """COUPLINGS is the one definition of a group; check it against the model itself: the
    parameters whose shape changes with a block's width, along the axis that changes."""
    spec = tiny_spec(arch, heads=4, qkv_bias=qkv_bias)
    layer = spec.layers[0]
    narrower = {"msa": LayerSpec(layer.heads, layer.head_dim - 1, layer.ffn, layer.scale),
                "ffn": LayerSpec(layer.heads, layer.head_dim, layer.ffn - 3, layer.scale)}
    wide = dict(layer_modules(build_model(spec))[0].named_parameters())
    for kind, smaller in narrower.items():
        block = layer_modules(build_model(spec.with_layers([smaller] * len(spec.layers))))[0]
        changed = {name: next(d for d in range(p.dim()) if p.shape[d] != wide[name].shape[d])
                   for name, p in block.named_parameters() if p.shape != wide[name].shape}
        listed = {c.path: c.axis for c, _ in coupled_parameters(block, kind)}
        assert changed == listed, kind
        assert {c.path for c in COUPLINGS[kind]} >= set(listed)


def test_plan_channels_removed_and_kept_partition_the_width():
    spec = tiny_spec("setr", heads=4)
    layer = spec.layers[0]
    plan = LayerPlan(heads=[1], dims={0: [0, 2], 2: [1, 3], 3: [0, 1]}, ffn=[5, 0])
    removed = plan.removed_channels(layer, "msa")
    d = layer.head_dim
    assert removed == sorted([0, 2] + list(range(d, 2 * d)) + [2 * d + 1, 2 * d + 3] + [3 * d, 3 * d + 1])
    kept = plan.kept_channels(layer, "msa").tolist()
    assert sorted(kept + removed) == list(range(layer.inner))
    assert plan.removed_channels(layer, "ffn") == [0, 5]
    assert len(plan.kept_channels(layer, "ffn")) == layer.ffn - 2
