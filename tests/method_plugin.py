"""A pruning method from outside the repository, installed the way a package would install it:
a module and a `.dist-info` folder whose entry_points.txt declares it under `varprune.core.methods`.
Put `root` on sys.path (or PYTHONPATH, for Snakemake and its jobs) and varprune finds it."""

from __future__ import annotations

from pathlib import Path

MODULE = "toy_methods"

SOURCE = '''"""Toy pruning method for the plugin tests: per-layer rates drawn uniformly at random."""

import numpy as np

from varprune.core.methods import Method
from varprune.pruning.sequence import BLOCKS, Sequence, solve_level


def uniform_random_counts(spec, scores, budget, settings, seed=0):
    n = len(spec.layers)
    draws = np.random.default_rng(seed).uniform(0.0, 1.0, (2, n))

    def rates_at(t):
        return tuple(np.clip(t * 2 * d, settings.rate_min, settings.rate_max) for d in draws)

    t, counts = solve_level(spec, budget, rates_at, settings, "uniform_random")
    msa, ffn = rates_at(t)
    flat = {b: np.full(n, np.nan) for b in BLOCKS}
    return counts, Sequence({b: np.ones(n) for b in BLOCKS}, flat, {b: np.zeros(n, int) for b in BLOCKS},
                            {"msa": msa, "ffn": ffn})


UNIFORM_RANDOM = Method("uniform_random", "per-layer rates drawn uniformly at random",
                        "toy_methods:uniform_random_counts", "control", "tab:olive")
'''


def write_plugin(root: Path, target: str = "toy_methods:UNIFORM_RANDOM") -> Path:
    """Install the toy method under `root` (entry point `uniform_random` -> `target`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{MODULE}.py").write_text(SOURCE, encoding="utf-8")
    info = root / f"{MODULE}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    metadata = "Metadata-Version: 2.1\nName: toy-methods\nVersion: 0.1\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    entry_points = f"[varprune.methods]\nuniform_random = {target}\n"
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return root
