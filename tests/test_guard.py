"""The guarded search: which cycle runs next, when it stops, which cycle it selects."""

from __future__ import annotations

import pytest

from varprune.pruning.guard import Decision, GuardSettings, decide, plan, selected_record

REFERENCE = 0.90


def search(knee: float, settings: GuardSettings, reachable: float = 0.95) -> list[Decision]:
    """Run the guard against a model whose validation Dice holds up to `knee` of the MACs removed
    and drops 2 points past it."""
    decisions: list[Decision] = []
    while not decisions or decisions[-1].stopped_because is None:
        target, parent, depth = plan(decisions, settings)
        val = REFERENCE if target <= knee + 1e-9 else REFERENCE - 0.02
        decisions.append(decide(len(decisions) + 1, target, parent, depth, val, REFERENCE,
                                decisions[-1] if decisions else None, settings, reachable))
    return decisions


@pytest.mark.parametrize("knee", [0.52, 0.6, 0.61, 0.649, 0.74])
def test_the_search_finds_the_knee_to_within_the_smallest_step(knee):
    settings = GuardSettings(step=0.05, start=0.30, max_cycles=40)
    decisions = search(knee, settings)
    chosen = selected_record(decisions)
    assert chosen["target"] <= knee + 1e-9
    assert knee - chosen["target"] < settings.smallest_step + 1e-9
    assert "smallest step" in decisions[-1].stopped_because
    chosen_decision = next(d for d in decisions if d.cycle == chosen["cycle"])
    assert chosen_decision.passed


def test_a_failed_cycle_goes_back_to_the_last_passing_one_with_half_the_step():
    decisions = search(0.42, GuardSettings(step=0.05, start=0.30, max_cycles=40))
    targets = [d.target for d in decisions]
    assert targets[:5] == pytest.approx([0.30, 0.35, 0.40, 0.45, 0.425])
    failed = decisions[3]
    assert not failed.passed and failed.next_parent == 3 and failed.next_target == pytest.approx(0.425)
    retry = decisions[4]
    assert retry.parent == 3 and retry.depth == 4  # pruned from cycle 3: one fine-tuning deeper than it
    assert not retry.passed and retry.next_target == pytest.approx(0.4125) and retry.next_parent == 3


def test_max_cycles_and_the_width_floors_stop_the_search():
    decisions = search(0.9, GuardSettings(step=0.05, start=0.30, max_cycles=3))
    assert len(decisions) == 3 and decisions[-1].stopped_because.startswith("max_cycles")
    assert selected_record(decisions)["cycle"] == 3
    decisions = search(0.99, GuardSettings(step=0.05, start=0.30, max_cycles=40), reachable=0.42)
    assert [d.target for d in decisions] == pytest.approx([0.30, 0.35, 0.40])
    assert "width floors" in decisions[-1].stopped_because


def test_when_even_the_first_target_fails_the_dense_model_is_selected_after_smaller_tries():
    decisions = search(0.10, GuardSettings(step=0.05, start=0.30, max_cycles=40))
    assert all(not d.passed for d in decisions) and all(d.parent == 0 for d in decisions)
    assert selected_record(decisions)["cycle"] == 0


def test_decisions_round_trip_through_their_file(tmp_path):
    decision = search(0.5, GuardSettings(max_cycles=2))[-1]
    decision.write(tmp_path / "cycle2.json")
    assert Decision.read(tmp_path / "cycle2.json") == decision


@pytest.mark.parametrize("change", [{"start": 0.0}, {"min_step": 0.1}, {"max_cycles": 0}])
def test_settings_that_cannot_search_are_refused(change):
    with pytest.raises(ValueError, match="pruning.guard"):
        GuardSettings(**change).check()
