"""The guarded schedule's jobs: judge one cycle against the reference (the `guard` checkpoint)
and hand over the selected model (the `select` rule). The search itself: varprune.pruning.guard."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from varprune.core.atomic import atomic_path, write_json
from varprune.pruning.budget import SequenceSettings, reachable_from, spec_macs
from varprune.pruning.guard import Decision, GuardSettings, decide, plan, selected_record

log = logging.getLogger(__name__)


def best_val_dice(checkpoint: str | os.PathLike) -> float:
    """The validation Dice a checkpoint's training selected it by (its provenance)."""
    from varprune.model.network import read_checkpoint

    return float(read_checkpoint(checkpoint)["provenance"]["training"]["best_val_dice"])


def _spec(checkpoint: str | os.PathLike):
    from varprune.model.network import read_checkpoint
    from varprune.model.spec import ModelSpec

    return ModelSpec.from_dict(read_checkpoint(checkpoint)["spec"])


def judge_cycle(cycle: int, oneshot_json: str | os.PathLike, cycle_model: str | os.PathLike,
                reference_model: str | os.PathLike, previous: Sequence[str | os.PathLike],
                fallback_model: str | os.PathLike, dense_model: str | os.PathLike, guard: dict,
                pruning: dict, out_json: str | os.PathLike) -> Decision:
    """Decide on cycle `cycle` from its validation Dice after fine-tuning and write the decision.

    `previous`: the decisions of cycles 1..cycle-1; `fallback_model`: the model the search goes
    back to if this cycle fails (the last cycle within tolerance, or dense)."""
    settings = GuardSettings.from_config(guard)
    decisions = [Decision.read(p) for p in previous]
    target, parent, depth = plan(decisions, settings)
    val_dice = float(json.loads(Path(oneshot_json).read_text())["val_dice_after"])
    reference = best_val_dice(reference_model)
    dense = _spec(dense_model)
    sequence = SequenceSettings.from_config(pruning)
    fallback = decisions[-1].selected if decisions else 0

    def reachable(parent_cycle: int) -> float:
        model = cycle_model if parent_cycle == cycle else fallback_model
        if parent_cycle not in (cycle, fallback):
            raise ValueError(f"cycle {parent_cycle} is neither this cycle nor the fallback ({fallback})")
        return reachable_from(_spec(model), dense, sequence)

    decision = decide(cycle, target, parent, depth, val_dice, reference, decisions[-1] if decisions else None,
                      settings, reachable)
    decision.write(out_json)
    verdict = "within" if decision.passed else "outside"
    log.info("cycle %d (%.4f of the MACs, depth %d): val Dice %.4f vs reference %.4f, %s tolerance %.4f; %s",
             cycle, target, depth, val_dice, reference, verdict, settings.tolerance,
             f"stop: {decision.stopped_because}" if decision.stopped_because
             else f"next {decision.next_target:.4f} from cycle {decision.next_parent}")
    return decision


def select_model(decisions: Sequence[str | os.PathLike], model: str | os.PathLike,
                 dense_model: str | os.PathLike, out_model: str | os.PathLike,
                 out_json: str | os.PathLike) -> dict:
    """Copy the selected cycle's checkpoint (dense when none passed) and write `selected.json`."""
    from varprune.model.network import count_parameters, load_model

    chain = [Decision.read(p) for p in decisions]
    if not chain or chain[-1].stopped_because is None:
        raise ValueError(f"{decisions[-1] if decisions else 'no decisions'}: the search has not ended")
    record = selected_record(chain)
    chosen, chosen_spec, _ = load_model(model)
    dense, dense_spec, _ = load_model(dense_model)
    record["macs_reduction"] = round(1 - spec_macs(chosen_spec) / spec_macs(dense_spec), 6)
    record["params_reduction"] = round(1 - count_parameters(chosen) / count_parameters(dense), 6)
    record["depth"] = next((d.depth for d in chain if d.cycle == record["cycle"]), 0)
    with atomic_path(out_model) as tmp:
        tmp.write_bytes(Path(model).read_bytes())
    write_json(out_json, record)
    log.info("selected cycle %d of %d tried: %.1f %% of the MACs removed, val Dice %.4f (%s)",
             record["cycle"], record["cycles_tried"], 100 * record["macs_reduction"], record["val_dice"],
             record["stopped_because"])
    return record
