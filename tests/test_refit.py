"""The output layer's least-squares refit after its inputs are pruned (varprune.pruning.refit)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_model import tiny_spec
from varprune.model.network import build_model
from varprune.pruning.budget import SequenceSettings
from varprune.pruning.cycle import CycleSettings, prune_model
from varprune.pruning.groups import LayerPlan, OuterPlan, Plans
from varprune.pruning.refit import output_group, output_layer, output_statistics, refit_output
from varprune.pruning.surgery import apply_plan


def tiny(arch: str):
    if arch == "setr":
        return tiny_spec("setr", heads=4)
    return tiny_spec("unetr", heads=4)


def trained_like(spec):
    """A model with non-trivial weights (random, scaled up so that every channel matters)."""
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def logits_at_output(model, batches):
    seen = []
    handle = output_layer(model).register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    handle.remove()
    return seen


@pytest.mark.parametrize("arch", ["setr", "unetr"])
def test_refit_is_the_least_squares_fit_of_the_old_logits(arch):
    """After removing inputs of the output layer, the refitted layer reproduces the logits from
    before the surgery as well as any linear map of the kept channels can (the closed form on the
    same voxels), and better than the surgery alone."""
    spec = tiny(arch)
    model = trained_like(spec)
    batches = [(torch.randn(spec.input_shape(2)), None) for _ in range(2)]
    before = [y for _, y in logits_at_output(model, batches)]
    group = output_group(spec)
    gone = [0, 2]
    kept = torch.tensor([c for c in range(spec.stages[group]) if c not in gone])
    head = [[] for _ in spec.stages]
    head[group] = gone
    plans = Plans([LayerPlan.empty() for _ in spec.layers], OuterPlan(head=head))
    stats = output_statistics(model, batches)
    apply_plan(model, spec, plans)
    plain = sum(float(((y - y0) ** 2).sum()) for (_, y), y0 in zip(logits_at_output(model, batches), before,
                                                                      strict=True))
    refit_output(model, kept, stats)
    seen = logits_at_output(model, batches)
    refitted = sum(float(((y - y0) ** 2).sum()) for (_, y), y0 in zip(seen, before, strict=True))
    x = torch.cat([i.movedim(1, -1).reshape(-1, len(kept)) for i, _ in seen]).double()
    y = torch.cat([y0.movedim(1, -1).reshape(-1, y0.shape[1]) for y0 in before]).double()
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    best = float(((a @ torch.linalg.lstsq(a, y).solution - y) ** 2).sum())
    assert refitted == pytest.approx(best, rel=1e-4, abs=1e-6)
    assert refitted < plain


@pytest.mark.parametrize("refit", [True, False])
def test_prune_model_refits_only_when_the_outputs_inputs_go_and_it_is_on(refit):
    spec = tiny("unetr")
    batches = [(torch.randn(spec.input_shape(2)), torch.randint(0, 2, (2, 1, *spec.img_size)))]
    for scope in ("transformer", "decoder"):
        model = trained_like(spec)
        dense_out = output_layer(model).weight.detach().clone()
        settings = CycleSettings(target=0.05 if scope == "transformer" else 0.6, refit_output=refit,
                                 sequence=SequenceSettings(scope=scope, min_head_channels=1))
        new_spec, _ = prune_model(model, spec, "fixed", settings, batches, seed=1)
        group = output_group(spec)
        weight = output_layer(model).weight.detach()
        if new_spec.stages[group] == spec.stages[group]:  # nothing the output reads was removed
            assert scope == "transformer" and torch.equal(weight, dense_out)
            continue
        kept_columns = [c for c in range(spec.stages[group])
                        if any(torch.equal(weight[:, k], dense_out[:, c]) for k in range(weight.shape[1]))]
        # without the refit the surgery keeps the old columns; with it they are new
        assert (len(kept_columns) == new_spec.stages[group]) != refit
