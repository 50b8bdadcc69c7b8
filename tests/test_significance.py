"""Significance criteria on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from tests.tiny_model import tiny_spec
from varprune.model.network import build_model
from varprune.pruning.significance import CRITERIA, make_criterion


def batches(spec, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(spec.input_shape(3), generator=g),
             (torch.rand(spec.input_shape(3), generator=g) > 0.7).float()) for _ in range(n)]


def model_with_dead_channels(spec):
    torch.manual_seed(0)
    model = build_model(spec)
    block, layer = model.vit.blocks[4], spec.layers[4]
    with torch.no_grad():
        block.mlp.linear1.weight[7] = 0
        block.mlp.linear1.bias[7] = 0
        block.mlp.linear2.weight[:, 7] = 0
        for part in range(3):  # head 1, dim 3
            block.attn.qkv.weight[part * layer.inner + layer.head_dim + 3] = 0
        block.attn.out_proj.weight[:, layer.head_dim + 3] = 0
    return model


@pytest.mark.parametrize("name", CRITERIA)
def test_a_channel_with_zero_weights_scores_lowest(name):
    spec = tiny_spec()
    model = model_with_dead_channels(spec)
    scores = make_criterion(name).score(model, spec, batches(spec))
    ffn, msa = scores[(4, "ffn")], scores[(4, "msa")]
    assert ffn[7] == 0 and ffn.argmin() == 7
    assert msa[1, 3] == 0 and msa.flatten().argmin() == 1 * spec.layers[4].head_dim + 3
    assert ffn.shape == (spec.layers[4].ffn,) and msa.shape == (2, 16)


def test_taylor_and_hessian_equal_hand_computed_values():
    spec = tiny_spec()
    torch.manual_seed(1)
    model = build_model(spec)
    data = batches(spec, n=2, seed=3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    mlp = model.vit.blocks[2].mlp
    taylor, fisher = 0.0, 0.0
    for images, labels in data:
        model.zero_grad()
        loss_fn(model.eval()(images), labels).backward()
        w1, b1, w2 = mlp.linear1.weight, mlp.linear1.bias, mlp.linear2.weight
        c = 5
        with torch.no_grad():
            taylor += abs(float((w1[c] * w1.grad[c]).sum() + b1[c] * b1.grad[c]
                                + (w2[:, c] * w2.grad[:, c]).sum()))
            fisher += float((w1[c] ** 2 * w1.grad[c] ** 2).sum() + b1[c] ** 2 * b1.grad[c] ** 2
                            + (w2[:, c] ** 2 * w2.grad[:, c] ** 2).sum())
    score = make_criterion("taylor").score(model, spec, data)[(2, "ffn")][5]
    assert float(score) == pytest.approx(taylor, rel=1e-4)
    hessian = make_criterion("hessian").score(model, spec, data)[(2, "ffn")][5]
    assert float(hessian) == pytest.approx(0.5 * fisher / 2, rel=1e-4)


def test_l1_and_l2_are_magnitudes_of_the_group():
    spec = tiny_spec()
    model = build_model(spec)
    mlp = model.vit.blocks[0].mlp
    c = 3
    parts = [mlp.linear1.weight[c], mlp.linear1.bias[c : c + 1], mlp.linear2.weight[:, c]]
    l1 = sum(float(p.abs().sum()) for p in parts)
    l2 = sum(float((p ** 2).sum()) for p in parts) ** 0.5
    assert float(make_criterion("l1").score(model, spec)[(0, "ffn")][c]) == pytest.approx(l1, rel=1e-5)
    assert float(make_criterion("l2").score(model, spec)[(0, "ffn")][c]) == pytest.approx(l2, rel=1e-5)


def test_unknown_criterion_is_refused():
    with pytest.raises(ValueError, match="unknown significance criterion 'fisher'"):
        make_criterion("fisher")


def test_calibration_batches_are_slabs_of_the_model_depth_in_3d():
    from varprune.data.datasets import Volume
    from varprune.pruning.cycle import calibration_batches

    rng = np.random.default_rng(0)
    volumes = [Volume(f"c{i}", rng.random((n, 8, 8), dtype=np.float32), (rng.random((n, 8, 8)) > 0.5), {})
               for i, n in enumerate((10, 3))]  # the second is shorter than a slab: zero-padded
    batches = calibration_batches(volumes, batches=3, batch_size=2, seed=1, spatial_dims=3, depth=4)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 1, 4, 8, 8)] * 3
    images = torch.cat([x for x, _ in batches])
    starts = {(i, s) for i in range(2) for s in range(max(1, volumes[i].image.shape[0] - 3))}
    expected = []
    for i, s in starts:
        slab = np.zeros((4, 8, 8), np.float32)
        part = volumes[i].image[s:s + 4]
        slab[: len(part)] = part
        expected.append(slab)
    for image in images:  # every drawn slab is a real window of a volume
        assert any(np.array_equal(image[0].numpy(), e) for e in expected)
    again = calibration_batches(volumes, batches=3, batch_size=2, seed=1, spatial_dims=3, depth=4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    flat = calibration_batches(volumes, batches=2, batch_size=3, seed=1)  # 2D: single slices
    assert [tuple(x.shape) for x, _ in flat] == [(3, 1, 8, 8)] * 2
