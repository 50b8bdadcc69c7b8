"""What a job's params are: the config slices each rule passes, cut to what changes its output.

Snakemake reruns a job when its params change (compared as text), so this module is the rerun
policy: keys are sorted at every level (`canonical`: reordering a config file reruns nothing),
keys that decide only what is left on disk or what is not pruned are left out (adding them to
the config reran nothing), a replicate's seed replaces the config's, and a pruning cycle sees
only its own target and its parent's (appending a target leaves earlier cycles alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Keys of the pruning slice that choose cycles rather than shape one: not passed to a cycle.
SCHEDULE_KEYS = ("methods", "cycle_targets", "schedule", "guard")


def canonical(value: Any) -> Any:
    """`value` with dict keys sorted at every level."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def config_slice(config: dict, dotted: str) -> Any:
    """A narrow, canonical slice of the config: config_slice(config, "data.download")."""
    node = config
    for key in dotted.split("."):
        node = node[key]
    return canonical(node)


def seeded_slice(section: dict, seed: int | None) -> dict:
    """A train, finetune or pruning slice as a job param, with the replicate's seed (None: the
    config's). Left out: keep_state (what stays on disk); distillation while it is off (weight
    0); with the transformer scope, the output refit and the outer-width rule (nothing outside
    the transformer is pruned); with the transformer and embedding scopes, the share below which
    a decoder group stays whole (no decoder group is pruned); `round_to` 1 (no rounding: adding
    the key reruns nothing)."""
    value = {k: v for k, v in canonical(section).items() if k != "keep_state"}
    if "distill" in value and not value["distill"]["weight"]:
        del value["distill"]
    if value.get("scope") == "transformer":
        value.pop("refit_output", None)
        value.pop("outer_width", None)
    if value.get("scope") in ("transformer", "embedding"):
        value.pop("min_group_share", None)
    if value.get("round_to") == 1:
        value.pop("round_to")
    return value if seed is None else canonical({**value, "seed": seed})


def cycle_slice(pruning: dict, target: float, previous_target: float) -> dict:
    """The pruning slice of one cycle (already seeded): the schedule keys out, its own target and
    its parent's in."""
    value = {key: v for key, v in pruning.items() if key not in SCHEDULE_KEYS}
    return canonical({**value, "target": target, "previous_target": previous_target})


def scheduled_targets(targets: Sequence[float], k: int) -> tuple[float, float]:
    """(target, previous target) of cycle k of pruning.cycle_targets."""
    if k > len(targets):
        raise ValueError(f"cycle {k} asked for, but pruning.cycle_targets has {len(targets)} targets")
    return targets[k - 1], targets[k - 2] if k > 1 else 0.0


def oneshot_slice(pruning: dict) -> dict:
    """The pruning slice of the one-shot curves (already seeded): everything but the schedule
    keys, so appending a cycle does not redo them."""
    return canonical({k: v for k, v in pruning.items() if k not in SCHEDULE_KEYS})


def shown_config(config: dict) -> dict:
    """The config as the report shows it: everything that defines the run. train.keep_state
    decides only what is left on disk and `resources` what jobs ask a scheduler for: toggling
    them must not rebuild the report."""
    shown = {k: v for k, v in canonical(config).items() if k != "resources"}
    shown["train"] = {k: v for k, v in shown["train"].items() if k != "keep_state"}
    return shown
