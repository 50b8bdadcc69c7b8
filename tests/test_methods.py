"""The method registry: a new pruning method is one registration, and everything follows from it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from varprune.core.methods import (
    PRUNING_METHODS,
    Method,
    colour,
    load_plugins,
    method_pattern,
    register,
    unknown_methods,
    unregister,
)
from varprune.model.network import ModelSpec
from varprune.pruning.cycle import SEQUENCE_COLUMNS, sequence_rows
from varprune.pruning.sequence import (
    BLOCKS,
    Sequence,
    SequenceSettings,
    counts_for_rates,
    plan_counts,
    removed_macs,
)
from varprune.study.compare import comparison_pairs

from .method_plugin import write_plugin
from .test_sequence import SPEC, layers_total, random_scores
from .toy_methods import uniform_random_counts


@pytest.fixture
def toy_method():
    method = register(Method("uniform_random", "per-layer rates drawn uniformly at random",
                             uniform_random_counts, "control", "tab:olive"))
    yield method
    unregister(method.name)


def test_one_registration_makes_a_method_usable_everywhere(toy_method):
    assert "uniform_random" in method_pattern().split("|")
    assert unknown_methods(["variable", "uniform_random"]) == []
    assert colour("uniform_random") == "tab:olive"
    pairs = comparison_pairs(["variable", "fixed", "uniform_random"])
    assert ("variable", "uniform_random") in pairs and ("fixed", "uniform_random") in pairs
    assert ("uniform_random", "dense_long") in pairs

    budget = int(0.4 * layers_total(SPEC))
    scores = random_scores(0)
    counts, sequence = plan_counts("uniform_random", SPEC, scores, budget, SequenceSettings(), seed=3)
    assert budget <= removed_macs(SPEC, counts) <= budget + 0.01 * layers_total(SPEC)
    again, _ = plan_counts("uniform_random", SPEC, scores, budget, SequenceSettings(), seed=3)
    assert again == counts

    rows = sequence_rows(1, SPEC, SPEC, counts, sequence, "uniform_random")
    assert set(rows[0]) == set(SEQUENCE_COLUMNS) and rows[0]["level"] == ""


def test_unregistered_and_malformed_methods_are_refused(toy_method):
    with pytest.raises(ValueError, match="exists already"):
        register(toy_method)
    with pytest.raises(ValueError, match="role"):
        Method("odd", "", uniform_random_counts, "winner")
    with pytest.raises(ValueError, match="lower-case identifier"):
        Method("Odd-One", "", uniform_random_counts, "control")
    unregister("uniform_random")
    assert "uniform_random" not in PRUNING_METHODS
    with pytest.raises(ValueError, match="unknown pruning method 'uniform_random'"):
        plan_counts("uniform_random", SPEC, random_scores(0), 1, SequenceSettings())


def test_rate_planned_and_realised_are_both_recorded():
    """The realised rate is what the surgery removed (whole groups, minimum widths); the planned
    rate is the solver's. For a fixed rate of 0.3 on 32 channels 9 go (0.28125)."""
    small = ModelSpec(arch="setr", input_size=32, patch=8, hidden=32, ffn=32, heads=2, num_layers=2,
                      head_channels=(8, 8, 8))
    settings = SequenceSettings(min_head_dim=1, min_ffn=1)
    counts = counts_for_rates(small, np.full(2, 0.3), np.full(2, 0.3), settings)
    sequence = Sequence({b: np.ones(2) for b in BLOCKS}, {b: np.full(2, np.nan) for b in BLOCKS},
                        {b: np.zeros(2, int) for b in BLOCKS}, {b: np.full(2, 0.3) for b in BLOCKS})
    rows = sequence_rows(1, small, small, counts, sequence, "fixed")
    ffn = [r for r in rows if r["block"] == "ffn"]
    assert {r["rate_planned"] for r in ffn} == {"0.3"}
    assert {float(r["rate_realised"]) for r in ffn} == {counts[0].ffn / 32}
    assert counts[0].ffn / 32 != 0.3


def test_a_method_installed_by_another_package_registers_through_its_entry_point(tmp_path, monkeypatch):
    root = write_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    try:
        assert load_plugins() == ["uniform_random"]
        assert "uniform_random" in method_pattern().split("|")
        assert load_plugins() == []  # already registered: skipped, not refused
        counts, _ = plan_counts("uniform_random", SPEC, random_scores(0), int(0.4 * layers_total(SPEC)),
                                SequenceSettings(), seed=3)
        assert removed_macs(SPEC, counts) >= int(0.4 * layers_total(SPEC))
    finally:
        unregister("uniform_random")
        sys.modules.pop("toy_methods", None)


def test_a_broken_plugin_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "missing", "toy_methods:NO_SUCH_NAME")))
    with pytest.raises(ImportError, match="plugin 'uniform_random' \\(toy_methods:NO_SUCH_NAME\\)"):
        load_plugins()
    sys.modules.pop("toy_methods", None)
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "wrong", "toy_methods:np")))
    with pytest.raises(TypeError, match="names a module, not a varprune.core.methods.Method"):
        load_plugins()
    sys.modules.pop("toy_methods", None)
