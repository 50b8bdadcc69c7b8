"""Test-set evaluation of a checkpoint: predictions on each case's own CT grid and 3D metrics in mm.

Metrics per case, all computed in 3D on the original CT grid with its real spacing, with
MONAI's implementations where they exist:
- `dice`: Dice coefficient (monai.metrics.compute_dice).
- `voe`: volumetric overlap error, 1 - Jaccard (monai.metrics.compute_iou).
- `rvd`: relative volume difference (|pred| - |truth|) / |truth|, signed, as a fraction
  (positive = over-segmentation). MONAI has none; it is one line.
- `assd_mm`: average symmetric surface distance (compute_average_surface_distance, symmetric).
- `msd_mm`: maximum symmetric surface distance = Hausdorff distance (compute_hausdorff_distance).
- `hd95_mm`: 95th percentile Hausdorff distance (the larger of the two directed 95th percentiles).
The distances are NaN when the prediction is empty (no surface to measure from).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)
from monai.transforms import KeepLargestConnectedComponent

from varprune.atomic import atomic_path, write_csv
from varprune.data.preprocess import load_npz, read_image, to_original_grid
from varprune.inference import pick_device, predict_volume
from varprune.model import load_model

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["case", "dice", "voe", "rvd", "assd_mm", "msd_mm", "hd95_mm"]


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """A binary volume as MONAI's metrics take it: (batch 1, channel 1, *spatial), float."""
    return torch.as_tensor(np.asarray(mask, dtype=bool))[None, None].float()


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary volumes by MONAI's `compute_dice` (1.0 when both are empty)."""
    return float(compute_dice(_as_batch(pred), _as_batch(truth), include_background=True, ignore_empty=False))


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """The metrics of one binary prediction against its truth; `spacing` in array axis order (mm)."""
    p, t = _as_batch(pred), _as_batch(truth)
    if t.sum() == 0:
        raise ValueError("the ground truth is empty: the metrics are undefined")
    spacing = [float(s) for s in spacing]
    iou = float(compute_iou(p, t, include_background=True, ignore_empty=False))
    if p.sum() == 0:
        assd = msd = hd95 = math.nan
    else:
        assd = float(compute_average_surface_distance(p, t, include_background=True, symmetric=True,
                                                      spacing=spacing))
        msd = float(compute_hausdorff_distance(p, t, include_background=True, spacing=spacing))
        hd95 = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                                spacing=spacing))
    return {
        "dice": dice(pred, truth),
        "voe": 1.0 - iou,
        "rvd": float((p.sum() - t.sum()) / t.sum()),
        "assd_mm": assd,
        "msd_mm": msd,
        "hd95_mm": hd95,
    }


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of a binary mask: the liver is one organ, so a
    detached island is a false positive (a piece of heart or spleen)."""
    if not mask.any():
        return mask
    keep = KeepLargestConnectedComponent(applied_labels=[1], connectivity=None)
    return keep(torch.as_tensor(mask[None].astype(np.uint8))).numpy()[0] > 0


def write_metrics(path: str | os.PathLike, rows: list[dict]) -> None:
    """`metrics.csv`: one row per case, columns METRIC_COLUMNS, written atomically."""
    write_csv(path, METRIC_COLUMNS,
              [{k: (row[k] if k == "case" else f"{row[k]:.6g}") for k in METRIC_COLUMNS} for row in rows])


def cases_with_truth(preprocessed: Sequence[str | os.PathLike],
                     truth: Sequence[str | os.PathLike]) -> list[tuple[str, Path, Path]]:
    """(case, data/preprocessed/{case}.npz, data/nifti/{case}/liver.nii.gz) of every test case
    given, in the given order; the two lists must name the same cases."""
    pairs = [(Path(p), Path(t)) for p in preprocessed for t in truth
             if Path(p).name.removesuffix(".npz") == Path(t).parent.name]
    cases = [Path(p).name.removesuffix(".npz") for p in preprocessed]
    if len(pairs) != len(cases) or len(truth) != len(cases):
        given = [Path(t).parent.name for t in truth]
        raise ValueError(f"test cases {cases} given with ground truth of {given}: every case needs exactly "
                         "one liver mask")
    if not cases:
        raise ValueError("no test cases given: every model is evaluated on the test split")
    return [(case, p, t) for case, (p, t) in zip(cases, pairs, strict=True)]


def evaluate_checkpoint(model_path: str | os.PathLike, preprocessed: Sequence[str | os.PathLike],
                        truth: Sequence[str | os.PathLike], out_metrics: str | os.PathLike,
                        out_pred_dir: str | os.PathLike,
                        batch_size: int = 16, device: str = "auto", interpolate: bool = True,
                        largest_component: bool = True, threads: int | None = None) -> list[dict]:
    """Predict every test case, save `pred/{case}.nii.gz` on the CT grid, write `metrics.csv`."""
    if threads:
        torch.set_num_threads(threads)
    model, spec, _ = load_model(model_path)
    target = pick_device(device)
    model.to(target)
    cases = cases_with_truth(preprocessed, truth)
    out_pred_dir = Path(out_pred_dir)
    out_pred_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for case, npz_path, truth_path in cases:
        arrays = load_npz(npz_path)
        prob = predict_volume(model, arrays["image"], spec, target, batch_size)
        pred = to_original_grid(prob, arrays, interpolate=interpolate)
        if largest_component:
            kept = sitk.GetImageFromArray(keep_largest_component(sitk.GetArrayFromImage(pred) > 0)
                                          .astype(np.uint8))
            kept.CopyInformation(pred)
            pred = kept
        truth = read_image(truth_path, case)
        if truth.GetSize() != pred.GetSize():
            raise ValueError(f"{case}: {truth_path} is {truth.GetSize()}, the prediction {pred.GetSize()}")
        with atomic_path(out_pred_dir / f"{case}.nii.gz") as tmp:
            sitk.WriteImage(pred, str(tmp), useCompression=True)
        spacing_zyx = tuple(reversed(truth.GetSpacing()))
        metrics = segmentation_metrics(sitk.GetArrayFromImage(pred) > 0,
                                       sitk.GetArrayFromImage(truth) > 0, spacing_zyx)
        rows.append({"case": case, **metrics})
        log.info("%s: Dice %.4f, VOE %.4f, RVD %+.4f, ASSD %.2f mm, MSD %.2f mm, HD95 %.2f mm", case,
                 *(metrics[k] for k in METRIC_COLUMNS[1:]))
    write_metrics(out_metrics, rows)
    log.info("mean Dice over %d test cases: %.4f", len(rows), float(np.mean([r["dice"] for r in rows])))
    return rows
