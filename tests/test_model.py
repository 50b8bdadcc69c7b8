"""The segmenter built from a spec: per-layer widths, checkpoints, errors."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_model import ARCHS, TINY_MODEL, pruned_spec, tiny_spec
from varprune.model.network import (
    CheckpointError,
    ModelSpec,
    build_model,
    count_parameters,
    load_model,
    save_checkpoint,
    transformer_layers,
)


def test_build_gives_each_layer_its_own_widths():
    spec = pruned_spec()
    model = build_model(spec)
    for block, layer in zip(transformer_layers(model), spec.layers, strict=True):
        assert block.attn.qkv.out_features == 3 * layer.heads * layer.head_dim
        assert block.attn.out_proj.in_features == layer.heads * layer.head_dim
        assert block.attn.num_heads == layer.heads
        assert block.attn.scale == layer.scale
        assert block.mlp.linear1.out_features == layer.ffn
        assert block.mlp.linear2.in_features == layer.ffn
    assert count_parameters(model) < count_parameters(build_model(tiny_spec()))


def test_pruned_checkpoint_round_trip_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    spec = pruned_spec()
    model = build_model(spec).eval()
    x = torch.randn(spec.input_shape(2))
    with torch.no_grad():
        expected = model(x)
    save_checkpoint(tmp_path / "model.pt", model, spec, {"parent": "dense/model.pt"})
    loaded, loaded_spec, provenance = load_model(tmp_path / "model.pt")
    assert loaded_spec == spec
    assert provenance == {"parent": "dense/model.pt"}
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_3d_spec_builds_and_runs():
    spec = tiny_spec(spatial_dims=3, depth=16)
    out = build_model(spec)(torch.randn(spec.input_shape(1)))
    assert out.shape == (1, 2, 16, 32, 32)


@pytest.mark.parametrize("changes, message", [
    (dict(patch=12), "power of 2"),
    (dict(patch=8, head_channels=[8, 8]), "one positive width per x2 stage"),
    (dict(patch=8, head_channels=[8, 0, 8]), "one positive width per x2 stage"),
    (dict(patch=8, head_channels=[8, 8, 8], head_layers=[12]), "head_layers"),
    (dict(patch=8, head_channels=[8, 8, 8], head_kernel=5), "head_kernel"),
    (dict(patch=32, head_channels=[8, 8, 8, 8, 8]), "at least 2 tokens"),
    (dict(arch="unetr", patch=8), "UNETR has patch 16"),
    (dict(arch="unetr", num_layers=6), "UNETR has patch 16"),
    (dict(arch="vit"), "model.arch"),
])
def test_spec_rejects_inconsistent_setr_and_unetr_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**{**TINY_MODEL, **ARCHS["setr"], **changes})


def test_setr_head_reads_the_chosen_layers_concatenated():
    """head_layers [3, -1]: layer 3's tokens as they leave it, next to the normed last layer."""
    torch.manual_seed(0)
    spec = tiny_spec("setr", head_layers=[3, -1])
    model = build_model(spec).eval()
    x = torch.randn(spec.input_shape(2))
    assert model.head[0].in_channels == 2 * spec.hidden
    with torch.no_grad():
        last, hidden_states = model.vit(x)
        tokens = torch.cat([hidden_states[3], last], dim=-1)
        grid = tokens.transpose(1, 2).reshape(2, 2 * spec.hidden, *(s // spec.patch for s in spec.img_size))
        assert torch.allclose(model(x), model.out(model.head(grid)))
        assert not torch.allclose(hidden_states[3], last)


def test_spec_rejects_sizes_that_do_not_fit_the_patch():
    with pytest.raises(ValueError, match="preprocess.input_size 40 .* must be a multiple of model.patch 16"):
        ModelSpec(arch="unetr", patch=16, input_size=40)
    with pytest.raises(ValueError, match="preprocess.input_size 36 .* must be a multiple of model.patch 8"):
        ModelSpec(input_size=36)
    with pytest.raises(ValueError, match="divisible by model.heads"):
        ModelSpec(hidden=100, heads=6)


def test_bad_checkpoints_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint"):
        load_model(missing)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable varprune checkpoint"):
        load_model(garbage)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="no spec or weights"):
        load_model(foreign)

    # Weights of the pruned model under the dense spec: shapes disagree.
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(mismatched, build_model(pruned_spec()), tiny_spec(), {})
    with pytest.raises(CheckpointError, match="mismatched.pt: the weights do not match the spec"):
        load_model(mismatched)
