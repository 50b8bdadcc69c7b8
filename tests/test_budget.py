"""The budget arithmetic the workflow checks targets with at parse time is the solvers' own."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.test_sequence import random_scores
from varprune.model.spec import ModelSpec
from varprune.pruning.budget import (
    SequenceSettings,
    check_cycle_targets,
    counts_for_rates,
    reachable_per_cycle,
    spec_macs,
    widths_after,
)
from varprune.pruning.sequence import BudgetError, fixed_counts, random_counts, variable_counts

from .workflow_helpers import REPO

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
DEFAULT = ModelSpec.from_config(CONFIG["model"], CONFIG["preprocess"]["input_size"])


@pytest.mark.parametrize("settings", [SequenceSettings(), SequenceSettings(min_head_dim=8, min_ffn=32),
                                      SequenceSettings(rate_max=0.5), SequenceSettings(msa_unit="head"),
                                      SequenceSettings(round_to=8)],
                         ids=["default", "old-floors", "rate-0.5", "heads", "round-8"])
@pytest.mark.parametrize("solver", [fixed_counts, variable_counts, random_counts])
def test_the_reach_is_what_the_solvers_can_remove_cycle_after_cycle(settings, solver):
    """At each cycle's reach the solver meets the budget; a little past it, it refuses. (Global
    ranking is bounded by the minimum widths alone and may go further: the check is the bound
    that every method meets.)"""
    dense = spec_macs(DEFAULT)
    spec = DEFAULT
    for reach in reachable_per_cycle(DEFAULT, 3, settings):
        removed_before = dense - spec_macs(spec)
        scores = random_scores(0, spec)
        budget = int((reach - 1e-4) * dense) - removed_before
        counts, _ = solver(spec, scores, budget, settings)
        assert spec_macs(spec) - spec_macs(widths_after(spec, counts)) >= budget  # the budget is met
        with pytest.raises(BudgetError):
            solver(spec, scores, int((reach + 2e-3) * dense) - removed_before, settings)
        full = np.full(len(spec.layers), settings.rate_max)
        spec = widths_after(spec, counts_for_rates(spec, full, full, settings))


def test_the_default_targets_pass_and_unreachable_or_unordered_ones_are_refused():
    settings = SequenceSettings.from_config(CONFIG["pruning"])
    check_cycle_targets(DEFAULT, CONFIG["pruning"]["cycle_targets"], settings)
    reach = reachable_per_cycle(DEFAULT, 3, settings)
    assert reach[0] < reach[1] and reach[-1] > max(CONFIG["pruning"]["cycle_targets"])
    with pytest.raises(ValueError, match=r"cycle 3 target 0\.97 cannot be reached.*96\.2%"):
        check_cycle_targets(DEFAULT, [0.45, 0.65, 0.97], settings)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_cycle_targets(DEFAULT, [0.5, 0.5], settings)
    with pytest.raises(ValueError, match="min_head_dim"):
        check_cycle_targets(DEFAULT, [0.5], SequenceSettings(min_ffn=DEFAULT.ffn + 1))
