"""Tolerance-guarded cycles: after each cycle, whether a method goes on, to which target and from
which parent, and which cycle is selected (the `guard` checkpoint rule's logic, without torch).

A method prunes `step` more of the dense MACs per cycle while its validation Dice stays within
`tolerance` of the reference (the dense model fine-tuned as often: `dense_long` round k). A
cycle that falls below goes back to the last cycle that passed and tries half the step; at the
smallest step (`min_step`, default step/4) a failure ends the search, so the largest share
within tolerance is found to within `min_step`. The width floors and `max_cycles` end it too.
Only validation Dice is read: the test set is touched after selection alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from varprune.core.atomic import write_json

# Tolerance for comparing steps and targets that were halved in floating point.
EPS = 1e-9


@dataclass(frozen=True)
class GuardSettings:
    """The `pruning.guard` config slice."""

    tolerance: float = 0.005
    step: float = 0.05
    min_step: float | None = None
    start: float = 0.30
    max_cycles: int = 12

    @classmethod
    def from_config(cls, cfg: dict) -> GuardSettings:
        return cls(**{k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__})

    @property
    def smallest_step(self) -> float:
        return self.min_step if self.min_step is not None else self.step / 4

    def check(self) -> None:
        """ValueError naming the key when the search could not work."""
        if not 0 < self.start < 1:
            raise ValueError(f"pruning.guard.start {self.start} must lie in (0, 1)")
        if not 0 < self.smallest_step <= self.step:
            raise ValueError(f"pruning.guard.min_step {self.smallest_step} must lie in "
                             f"(0, step = {self.step}]")
        if self.max_cycles < 1:
            raise ValueError(f"pruning.guard.max_cycles {self.max_cycles} must be at least 1")


@dataclass(frozen=True)
class Decision:
    """The `guard` checkpoint's record of cycle `cycle` (results/{run}/{method}/guard/cycle{k}.json).

    `target`/`parent`: what this cycle was (MACs share removed from the dense model; the cycle
    it was pruned from, 0 = dense); `depth`: fine-tunings in its lineage, the reference round it
    is judged against (a retry from an earlier cycle is shallower than its number). `next_*`:
    the next cycle's plan, None when `stopped_because` is set. `selected`: the last cycle
    within tolerance so far (0 = none: the dense model)."""

    cycle: int
    target: float
    parent: int
    depth: int
    val_dice: float
    reference: float
    passed: bool
    step: float
    selected: int
    selected_target: float
    next_target: float | None
    next_parent: int | None
    stopped_because: str | None

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | os.PathLike) -> Decision:
        return cls(**json.loads(Path(path).read_text()))


def plan(decisions: list[Decision], settings: GuardSettings) -> tuple[float, int, int]:
    """(target, parent, depth) of the cycle after `decisions` (the chain so far; empty: cycle 1)."""
    if not decisions:
        return settings.start, 0, 1
    last = decisions[-1]
    if last.stopped_because is not None:
        raise ValueError(f"cycle {last.cycle} ended the search ({last.stopped_because}); "
                         "no further cycle is planned")
    parent_depth = next((d.depth for d in decisions if d.cycle == last.next_parent), 0)
    return last.next_target, last.next_parent, parent_depth + 1


def decide(cycle: int, target: float, parent: int, depth: int, val_dice: float, reference: float,
           previous: Decision | None, settings: GuardSettings,
           reachable: float | Callable[[int], float]) -> Decision:
    """Judge cycle `cycle` and plan the next one.

    `reachable`: the largest share of the dense MACs one more cycle could remove from the model
    the next cycle would start from (the width floors' limit), or a function of that model's
    cycle (0 = dense)."""
    step = previous.step if previous is not None else settings.step
    passed = val_dice >= reference - settings.tolerance - EPS
    if passed:
        selected, selected_target = cycle, target
        next_target = target + step
    else:
        selected = previous.selected if previous is not None else 0
        selected_target = previous.selected_target if previous is not None else 0.0
        step = step / 2
        next_target = target - step
    stop = None
    if not passed and step < settings.smallest_step - EPS:
        stop = f"validation Dice fell below the tolerance at the smallest step ({settings.smallest_step:g})"
    elif cycle >= settings.max_cycles:
        stop = f"max_cycles ({settings.max_cycles}) reached"
    elif next_target <= selected_target + EPS:
        stop = "no smaller step left between the selected cycle and the failed one"
    elif next_target > (reach := reachable(selected) if callable(reachable) else reachable) + EPS:
        stop = (f"the width floors stop the next target ({next_target:.4f} of the MACs; one more cycle "
                f"reaches {reach:.4f})")
    return Decision(cycle=cycle, target=round(target, 6), parent=parent, depth=depth, val_dice=val_dice,
                    reference=reference, passed=passed, step=step, selected=selected,
                    selected_target=round(selected_target, 6),
                    next_target=None if stop else round(next_target, 6),
                    next_parent=None if stop else selected, stopped_because=stop)


def chain_done(decisions: list[Decision]) -> bool:
    return bool(decisions) and decisions[-1].stopped_because is not None


def selected_record(decisions: list[Decision]) -> dict:
    """`selected.json` without the cost figures: which cycle, its validation Dice, why it stopped."""
    last = decisions[-1]
    chosen = next((d for d in decisions if d.cycle == last.selected), None)
    return {
        "cycle": last.selected,
        "target": last.selected_target,
        "val_dice": chosen.val_dice if chosen else math.nan,
        "reference": chosen.reference if chosen else math.nan,
        "cycles_tried": len(decisions),
        "stopped_because": last.stopped_because,
    }
