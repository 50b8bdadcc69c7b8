"""The intensity baseline: the best HU window for the liver, then the largest connected component.

It measures how hard a dataset is. If a window and a connected component find the liver,
the data cannot tell a segmenter that learned shape and context from a threshold.
The window is chosen on the training cases (first by voxel Dice over every window, computed
from histograms, then the best candidates again with the connected-component step) and
scored on the test cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from varprune.engine.evaluate import dice

HU_EDGES = np.arange(-200, 401, 5)  # candidate window bounds


@dataclass
class Case:
    """A converted case: HU volume and liver mask as arrays."""

    name: str
    hu: np.ndarray
    liver: np.ndarray


def window_dice_table(case: Case) -> np.ndarray:
    """Voxel Dice of every window [HU_EDGES[i], HU_EDGES[j]) at once, from cumulative histograms."""
    bins = np.concatenate([[-np.inf], HU_EDGES, [np.inf]])
    all_hist = np.histogram(case.hu, bins=bins)[0]
    liver_hist = np.histogram(case.hu[case.liver], bins=bins)[0]
    all_cum = np.concatenate([[0], np.cumsum(all_hist)])
    liver_cum = np.concatenate([[0], np.cumsum(liver_hist)])
    # Window from edge i to edge j covers bins i+1 .. j (bin 0 is below the first edge).
    lo = np.arange(len(HU_EDGES))[:, None] + 1
    hi = np.arange(len(HU_EDGES))[None, :] + 1
    tp = liver_cum[hi] - liver_cum[lo]
    pred = all_cum[hi] - all_cum[lo]
    table = 2.0 * tp / np.maximum(pred + case.liver.sum(), 1)
    table[hi <= lo] = 0.0
    return table


def segment(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Threshold to the window, keep the largest 3D connected component."""
    mask = (hu >= window[0]) & (hu < window[1])
    if not mask.any():
        return mask
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))),
                                   sortByObjectSize=True)
    return sitk.GetArrayViewFromImage(labels) == 1


def fit_window(train: list[Case], candidates: int = 12) -> tuple[float, float]:
    """The window that maximises the mean Dice (with the connected-component step) on `train`."""
    table = np.mean([window_dice_table(c) for c in train], axis=0)
    best = np.argsort(table, axis=None)[::-1][:candidates]
    scored = []
    for flat in best:
        i, j = np.unravel_index(flat, table.shape)
        window = (float(HU_EDGES[i]), float(HU_EDGES[j]))
        scored.append((np.mean([dice(segment(c.hu, window), c.liver) for c in train]), window))
    return max(scored)[1]


def evaluate_baseline(train: list[Case], test: list[Case]) -> dict:
    """Fit on `train`, score on `test`; also the per-case oracle window as a ceiling."""
    window = fit_window(train)
    per_case = {c.name: dice(segment(c.hu, window), c.liver) for c in test}
    oracle = {c.name: dice(segment(c.hu, fit_window([c])), c.liver) for c in test}
    return {
        "window": window,
        "dice": per_case,
        "mean_dice": float(np.mean(list(per_case.values()))),
        "oracle_dice": oracle,
        "mean_oracle_dice": float(np.mean(list(oracle.values()))),
    }
