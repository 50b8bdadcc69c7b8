"""Walking a guarded search as the workflow does (varprune.pruning.guard_search): parents,
references, fallbacks and selection inputs from decision files, without Snakemake."""

from __future__ import annotations

import pytest

from varprune.pruning.guard import GuardSettings, decide, plan
from varprune.pruning.guard_search import GuardSearch

SETTINGS = GuardSettings(tolerance=0.005, step=0.1, start=0.3, max_cycles=6)
REFERENCE = 0.9


def _search(tmp_path, val_dice: list[float], reference: str = "dense_long") -> tuple[GuardSearch, list[str]]:
    """Decision files of a search whose cycles score `val_dice` in turn; `read` logs each k asked."""
    decisions, asked = [], []
    for k, val in enumerate(val_dice, start=1):
        target, parent, depth = plan(decisions, SETTINGS)
        previous = decisions[-1] if decisions else None
        decisions.append(decide(k, target, parent, depth, val, REFERENCE, previous, SETTINGS, reachable=0.99))
        decisions[-1].write(tmp_path / f"cycle{k}.json")
        if decisions[-1].stopped_because:
            break

    def read(k: int) -> str:
        asked.append(k)
        return str(tmp_path / f"cycle{k}.json")

    return GuardSearch("results/r", "variable", SETTINGS, read, reference), asked


def test_cycles_start_from_the_parent_the_plan_names_and_are_judged_at_its_depth(tmp_path):
    # cycle 1 (0.3) passes, 2 (0.4) passes, 3 (0.5) fails -> 4 retries 0.45 from cycle 2.
    search, _ = _search(tmp_path, [0.9, 0.9, 0.8, 0.9, 0.8, 0.8])
    assert search.parent_model(1) == "results/r/dense/model.pt"
    assert search.parent_model(3) == "results/r/variable/cycle2/model.pt"
    assert search.parent_model(4) == "results/r/variable/cycle2/model.pt"
    assert search.reference_model(1) == "results/r/dense_long/round1/model.pt"
    assert search.reference_model(4) == "results/r/dense_long/round3/model.pt"  # cycle 2's lineage + 1
    assert search.targets(4) == (pytest.approx(0.45), pytest.approx(0.4))
    assert search.targets(1) == (pytest.approx(0.3), 0.0)
    assert search.fallback_model(1) == "results/r/dense/model.pt"
    assert search.fallback_model(4) == "results/r/variable/cycle2/model.pt"
    assert search.earlier_decision_files(3) == ["results/r/variable/guard/cycle1.json",
                                                "results/r/variable/guard/cycle2.json"]


def test_the_finished_search_selects_the_last_cycle_within_tolerance(tmp_path):
    search, _ = _search(tmp_path, [0.9, 0.9, 0.8, 0.9, 0.8, 0.8])
    chain = search.decisions()
    assert chain[-1].stopped_because and chain[-1].selected == 4
    inputs = search.selection_inputs()
    assert inputs["model"] == "results/r/variable/cycle4/model.pt"
    assert inputs["decisions"] == [f"results/r/variable/guard/cycle{k}.json"
                                   for k in range(1, len(chain) + 1)]
    assert search.selected_reference() == (len(chain), "dense_long/round3")


def test_a_search_where_nothing_passes_selects_dense_and_its_reference_is_dense(tmp_path):
    search, _ = _search(tmp_path, [0.5] * 6)
    assert search.selection_inputs()["model"] == "results/r/dense/model.pt"
    assert search.selected_reference()[1] == "dense"


def test_reference_dense_reads_no_decision(tmp_path):
    """Judged against dense, a cycle's reference needs no plan: no checkpoint is waited for."""
    search, asked = _search(tmp_path, [0.9, 0.9], reference="dense")
    assert search.reference_model(2) == "results/r/dense/model.pt" and asked == []


def test_asking_past_the_end_of_the_search_names_the_decision(tmp_path):
    search, _ = _search(tmp_path, [0.5] * 6)
    last = len(search.decisions())
    with pytest.raises(ValueError, match=f"cycle{last}.json: the search of variable ended at cycle {last}"):
        search.plan(last + 2)
