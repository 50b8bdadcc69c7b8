"""Toy pruning method for the plugin tests: per-layer rates drawn uniformly at random."""

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
