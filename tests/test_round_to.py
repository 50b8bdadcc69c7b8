"""pruning.round_to: every kept width is a multiple of it (or stays whole), for every method,
scope and architecture, and the MAC budgets are still met."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.test_scope import METHODS, tiny
from varprune.model.network import build_model
from varprune.pruning.budget import SequenceSettings, reachable_per_cycle, rounded_removal
from varprune.pruning.cycle import CycleSettings, prune_model
from varprune.pruning.significance import make_criterion
from varprune.report.page import scope_phrase
from varprune.workflow.params import seeded_slice


@pytest.mark.parametrize(("width", "count", "floor", "step", "removed"), [
    (64, 5, 8, 8, 8),  # keeps 59 -> 56
    (64, 3, 8, 8, 0),  # keeps 61 -> 64 (whole)
    (64, 4, 8, 8, 0),  # keeps 60: 56 and 64 tie, the wider wins
    (64, 56, 8, 8, 56),  # the floor is a multiple: keeps 8
    (64, 61, 2, 8, 56),  # keeps 3 -> 8, the smallest multiple
    (8, 6, 2, 16, 0),  # no multiple of 16 below 8: the group stays whole
    (12, 7, 2, 8, 4),  # a width that is no multiple: keeps 5 -> 8
    (64, 5, 8, 1, 5),  # step 1: unchanged
])
def test_rounded_removal_keeps_the_nearest_allowed_width(width, count, floor, step, removed):
    assert rounded_removal(width, count, floor, step) == removed


def test_rounded_removal_is_monotone_and_keeps_allowed_widths():
    """The solvers search over counts: rounding must never remove less for a larger count."""
    for width, floor, step in itertools.product((6, 8, 12, 30, 64, 96), (1, 2, 8), (1, 2, 4, 8, 16)):
        if floor > width:
            continue
        previous = -1
        for count in range(width - floor + 1):
            removed = rounded_removal(width, count, floor, step)
            kept = width - removed
            assert removed >= previous, (width, floor, step, count)
            assert kept == width or (kept % step == 0 and kept >= floor), (width, floor, step, count)
            previous = removed


def widths(spec) -> list[tuple[str, int, int]]:
    """(what, width now, dense width) of every prunable width the rounding governs."""
    dense = spec.dense()
    layers = list(enumerate(zip(spec.layers, dense.layers, strict=True)))
    rows = [(f"layer{i} msa", layer.inner, d.inner) for i, (layer, d) in layers]
    rows += [(f"layer{i} ffn", layer.ffn, d.ffn) for i, (layer, d) in layers]
    rows += [(name, w, d) for name, w, d in zip(spec.stage_names, spec.stages, dense.stages, strict=True)]
    return rows + [("embed", spec.width, dense.width)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("arch", "msa_unit"), [("setr", "dim"), ("unetr", "dim"), ("unetr", "head")])
def test_every_method_keeps_multiples_of_round_to_and_meets_the_budget(arch, method, msa_unit):
    """Scope all: the MSA, FFN, decoder and embedding widths all rounded, over two cycles (the
    second starts from rounded widths). The transformer scope rounds MSA and FFN by the same
    code (tests/test_budget.py has the default SETR's round-8 case)."""
    scope = "all"
    torch.manual_seed(0)
    spec = tiny(arch)
    model = build_model(spec).eval()
    batches = [(torch.randn(spec.input_shape(2)), torch.randint(0, 2, (2, 1, *spec.img_size)))]
    sequence = SequenceSettings(scope=scope, msa_unit=msa_unit, min_embed=4, min_head_channels=2,
                                min_group_share=0.0, round_to=4)
    targets = [0.8 * r for r in reachable_per_cycle(spec, 2, sequence)]
    previous = 0.0
    for cycle, target in enumerate(targets, start=1):
        settings = CycleSettings(target=target, previous_target=previous, sequence=sequence)
        scores = make_criterion("l1").score(model, spec, batches)
        spec, summary = prune_model(model, spec, method, settings, batches, seed=cycle, scores=scores)
        assert summary["reduction_vs_dense"] >= target - 1e-9
        for what, width, dense in widths(spec):
            assert width == dense or width % 4 == 0, f"cycle {cycle}: {what} keeps {width} of {dense}"
        previous = target
    assert any(width != dense for _, width, dense in widths(spec))
    with torch.no_grad():
        assert model(torch.randn(spec.input_shape(1))).shape == (1, 2, *spec.img_size)


def test_round_to_one_is_not_a_job_param_and_other_values_are():
    assert "round_to" not in seeded_slice({"scope": "all", "round_to": 1}, None)
    assert seeded_slice({"scope": "all", "round_to": 8}, None)["round_to"] == 8


def test_round_to_below_one_is_refused():
    with pytest.raises(ValueError, match="round_to"):
        SequenceSettings(round_to=0)


def test_the_report_says_when_widths_are_rounded():
    assert "multiple of 8" in scope_phrase({"scope": "all", "round_to": 8})
    assert "multiple of 8" in scope_phrase({"scope": "transformer", "round_to": 8})
    assert "round_to" not in scope_phrase({"scope": "all", "round_to": 1})
