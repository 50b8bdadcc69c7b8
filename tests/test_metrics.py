"""Segmentation metrics against cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from varprune.engine.evaluate import segmentation_metrics

SPACING = (2.5, 0.8, 0.8)  # z, y, x in mm: anisotropic, as CT is


def box(shape=(12, 40, 40), z=(3, 9), y=(10, 30), x=(10, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


def test_identical_masks_score_perfectly():
    m = segmentation_metrics(box(), box(), SPACING)
    assert m["dice"] == pytest.approx(1.0)
    assert m["voe"] == pytest.approx(0.0)
    assert m["rvd"] == pytest.approx(0.0)
    assert m["assd_mm"] == pytest.approx(0.0)
    assert m["msd_mm"] == pytest.approx(0.0)
    assert m["hd95_mm"] == pytest.approx(0.0)


def test_disjoint_masks_score_zero_overlap():
    m = segmentation_metrics(box(x=(2, 8)), box(x=(30, 36)), SPACING)
    assert m["dice"] == pytest.approx(0.0)
    assert m["voe"] == pytest.approx(1.0)
    assert m["rvd"] == pytest.approx(0.0)  # same volume
    assert m["msd_mm"] > 0


@pytest.mark.parametrize(("axis", "voxels", "mm"), [(0, 2, 5.0), (2, 3, 2.4)])
def test_shift_by_known_distance_in_mm(axis, voxels, mm):
    truth = box()
    pred = np.roll(truth, voxels, axis=axis)
    m = segmentation_metrics(pred, truth, SPACING)
    assert m["msd_mm"] == pytest.approx(mm)
    assert 0 < m["assd_mm"] < mm
    assert 0 < m["hd95_mm"] <= mm + 1e-5  # distances come back in float32
    # Overlap of two equal boxes shifted along one axis.
    extent = {0: 6, 2: 20}[axis]
    overlap = (extent - voxels) / extent
    assert m["dice"] == pytest.approx(overlap)
    assert m["voe"] == pytest.approx(1 - overlap / (2 - overlap))


def test_relative_volume_difference_is_signed():
    truth = box(x=(10, 30))
    assert segmentation_metrics(box(x=(10, 40)), truth, SPACING)["rvd"] == pytest.approx(0.5)
    assert segmentation_metrics(box(x=(10, 20)), truth, SPACING)["rvd"] == pytest.approx(-0.5)


def test_empty_prediction_has_no_surface_distance():
    m = segmentation_metrics(np.zeros((12, 40, 40), bool), box(), SPACING)
    assert m["dice"] == pytest.approx(0.0) and m["rvd"] == pytest.approx(-1.0)
    assert math.isnan(m["msd_mm"]) and math.isnan(m["assd_mm"])


def test_empty_truth_is_an_error():
    with pytest.raises(ValueError, match="ground truth is empty"):
        segmentation_metrics(box(), np.zeros((12, 40, 40), bool), SPACING)


def test_largest_component_drops_a_detached_island():
    from varprune.engine.evaluate import keep_largest_component

    liver = box()
    island = box(z=(3, 5), y=(34, 38), x=(34, 38))
    kept = keep_largest_component(liver | island)
    assert np.array_equal(kept, liver)
    assert not keep_largest_component(np.zeros_like(liver)).any()
