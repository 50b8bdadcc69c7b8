"""The names of the pruning methods and of the reference models, in one place.

The rules (wildcards, config checks), the rate solver and the report all read these; adding a
method means adding it here and giving `pruning.sequence` its solver. Pure Python: the
workflow imports it at parse time, before any job and without torch.
"""

from __future__ import annotations

# Pruning methods, in the order tables and figures show them.
PRUNING_METHODS: dict[str, str] = {
    "variable": "the paper's variable pruning-rate sequence (rates fall with layer significance)",
    "fixed": "one pruning rate for every layer (the paper's baseline)",
    "global": "one ranking of layer-normalised group scores across layers (Torch-Pruning's default)",
    "random": "per-layer rates with variable's spread, assigned at random (seeded): the control "
              "any informed allocation must beat",
}

# Reference models every comparison is read against (results/{run}/{name}/).
CONTROLS: dict[str, str] = {
    "dense_long": "the dense model fine-tuned, without pruning, as long as the last cycle of a method "
                  "was in total (cycles × the fine-tuning budget, same recipe)",
    "transformer_off": "every MSA and FFN block removed (width 0: the residual stream passes through), "
                       "fine-tuned with one cycle's budget: what the model does without its transformer",
}

COLOURS: dict[str, str] = {
    "dense": "black", "dense_long": "dimgray", "transformer_off": "darkgray",
    "variable": "tab:red", "fixed": "tab:blue", "global": "tab:green", "random": "tab:purple",
}

# Readable names of metrics and costs for tables meant for people (CSV files keep the keys).
LABELS: dict[str, str] = {
    "dice": "Dice", "voe": "VOE", "rvd": "RVD", "assd_mm": "ASSD (mm)", "msd_mm": "MSD (mm)",
    "hd95_mm": "HD95 (mm)", "params": "Params", "macs_full": "MACs", "macs_thop": "MACs (thop)",
    "latency_ms": "Latency (ms)",
}


def method_pattern() -> str:
    """A regular expression matching exactly the method names (Snakemake wildcard constraint)."""
    return "|".join(PRUNING_METHODS)


def unknown_methods(methods: list[str]) -> list[str]:
    """The names in `methods` that are not pruning methods."""
    return [m for m in methods if m not in PRUNING_METHODS]
