"""Cost counters: the full MAC count against the analytic one, and the cost record."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_model import ARCHS, pruned_spec, tiny_spec
from varprune.engine.cost import macs_full, macs_thop, measure_cost
from varprune.model.network import LayerSpec, build_model, count_parameters, transformer_layers


def analytic_block_macs(tokens: int, hidden: int, heads: int, head_dim: int, ffn: int) -> int:
    """qkv, q·kᵀ, attention·v, output projection, and the two FFN matmuls of one layer."""
    inner = heads * head_dim
    return (tokens * hidden * 3 * inner  # qkv
            + 2 * tokens * tokens * inner  # q·kᵀ and attention·v, summed over heads
            + tokens * inner * hidden  # out_proj
            + 2 * tokens * hidden * ffn)  # linear1 and linear2


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_macs_full_matches_the_analytic_count_of_a_transformer_layer():
    spec = pruned_spec()
    model = build_model(spec)
    tokens = 9
    for index in (0, 5):
        block, layer = transformer_layers(model)[index], spec.layers[index]
        x = torch.randn(1, tokens, spec.hidden)
        assert macs_full(block, x) == analytic_block_macs(tokens, spec.hidden, layer.heads,
                                                          layer.head_dim, layer.ffn)


def test_thop_misses_exactly_the_attention_matmuls_of_a_layer():
    spec = tiny_spec()
    block, layer = transformer_layers(build_model(spec))[0], spec.layers[0]
    tokens = 16
    x = torch.randn(1, tokens, spec.hidden)
    attention = 2 * tokens * tokens * layer.inner
    linear_only = analytic_block_macs(tokens, spec.hidden, layer.heads, layer.head_dim, layer.ffn) - attention
    # thop also counts the norms and activations elementwise; the matmuls it sees are the linears.
    assert linear_only <= macs_thop(block, x) < linear_only + attention


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_cost_record_of_a_pruned_model_is_smaller_complete_and_deterministic():
    dense, pruned = tiny_spec(), pruned_spec()
    records = [measure_cost(build_model(s), s) for s in (dense, pruned)]
    for record, spec in zip(records, (dense, pruned), strict=True):
        assert record["input_shape"] == [1, 1, 32, 32]
        assert record["params"] == count_parameters(build_model(spec))
        assert record["macs_full"] >= record["macs_full_encoder"] > 0
        assert not any(key.startswith("latency") for key in record)  # timed side by side, elsewhere
        assert 0 < record["params_transformer"] < record["params_encoder"] < record["params"]
    assert records[1]["params"] < records[0]["params"]
    assert records[1]["macs_full"] < records[0]["macs_full"]
    assert records[1]["macs_thop"] < records[0]["macs_thop"]


@pytest.mark.parametrize("arch", ARCHS)
def test_closed_form_macs_equal_the_counter_for_dense_pruned_off_2d_and_3d(arch):
    from varprune.model.macs import layer_macs, rest_macs

    off = tiny_spec(arch).with_layers([LayerSpec(0, 0, 0, 0.25) for _ in range(12)])  # transformer_off
    specs = [tiny_spec(arch), pruned_spec(arch), off,
             tiny_spec(arch, spatial_dims=3, depth=16, feature_size=2)]
    if arch == "setr":  # 1x1 head, patch 16 (four stages), several layers read, in 2D and 3D
        specs += [tiny_spec(arch, patch=16, head_channels=[8, 8, 4, 4], head_kernel=1,
                            head_layers=[0, 3, -1]),
                  tiny_spec(arch, spatial_dims=3, depth=8, head_kernel=1)]
    for spec in specs:
        model = build_model(spec)
        expected = macs_full(model, torch.zeros(spec.input_shape(1)))
        formula = rest_macs(spec.to_dict()) + sum(
            layer_macs(spec.img_size, spec.patch, spec.hidden, ls.inner, ls.ffn) for ls in spec.layers)
        assert formula == expected


def test_a_latency_difference_counts_only_beyond_the_timing_spread():
    import pandas as pd

    from varprune.study.compare import beyond_spread

    median = pd.Series([50.0, 45.0, 30.0, 20.0])
    spread = pd.Series([4.0, 4.0, 4.0, float("nan")])
    # Reference 50 with spread 4: 45 (gap 5) and 30 lie beyond both spreads, a missing spread
    # decides nothing, and 47 (gap 3) is inside.
    assert beyond_spread(median, spread, 50.0, 4.0).tolist() == [False, True, True, False]
    assert beyond_spread(pd.Series([47.0]), pd.Series([4.0]), 50.0, 4.0).tolist() == [False]
    # the larger of the two spreads decides: 45 against a reference that moved by 6
    assert beyond_spread(pd.Series([45.0]), pd.Series([1.0]), 50.0, 6.0).tolist() == [False]
    # dense and dense_long, the same network, 6 ms apart: a 5 ms gap is no longer resolved.
    assert beyond_spread(median, spread, 50.0, 4.0, floor=6.0).tolist() == [False, False, True, False]


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_the_latency_job_times_every_model_side_by_side_with_a_spread(tmp_path):
    """Every model, eager and onnxruntime, one row each: medians, the spread over rounds, and the
    parts (embedding + transformer + decoder = whole)."""
    from varprune.engine.latency import COLUMNS, time_models, write_latency
    from varprune.model.network import save_checkpoint

    paths = {}
    for name, spec in (("dense", tiny_spec()), ("variable/cycle1", pruned_spec())):
        torch.manual_seed(0)
        paths[name] = tmp_path / name.replace("/", "_") / "model.pt"
        paths[name].parent.mkdir()
        save_checkpoint(paths[name], build_model(spec), spec, {})
    table = write_latency(paths, tmp_path / "latency.csv",
                          {"threads": 1, "rounds": 2, "runs": 20, "warmup": 1, "runtimes": ["eager", "onnx"]})
    assert list(table.columns) == COLUMNS and table.model.tolist() == ["dense", "variable/cycle1"]
    assert (table[["latency_ms", "latency_onnx_ms", "latency_encoder_ms"]] > 0).all().all()
    assert (table[["latency_spread_ms", "latency_onnx_spread_ms"]] >= 0).all().all()
    parts = table.latency_embedding_ms + table.latency_transformer_ms + table.latency_decoder_ms
    assert parts.to_numpy() == pytest.approx(table.latency_ms.to_numpy(), abs=2e-3)
    import pandas as pd

    assert pd.read_csv(tmp_path / "latency.csv").model.tolist() == ["dense", "variable/cycle1"]
    eager = time_models({"dense": paths["dense"]}, rounds=2, runs=20, warmup=1, runtimes=("eager",))
    assert eager.latency_onnx_ms.isna().all() and eager.latency_ms.notna().all()
    with pytest.raises(ValueError, match="cost.rounds"):
        time_models(paths, rounds=1)
