"""Preprocessing onto the model grid and back, and splits by patient."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from varprune.data.convert import convert_case
from varprune.data.preprocess import (
    PreprocessError,
    PreprocessSpec,
    load_npz,
    preprocess_case,
    to_original_grid,
)
from varprune.data.splits import SplitError, make_splits
from varprune.engine.baseline import Case, evaluate_baseline
from varprune.engine.evaluate import dice

CASES = [f"ircad{i:02d}" for i in range(1, 11)]


@pytest.fixture(scope="module")
def converted(tiny_archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("nifti") / "ircad01"
    convert_case(tiny_archive, "ircad01", out)
    return out


@pytest.mark.parametrize("spacing_mm", [8.0, None])
def test_prediction_maps_back_onto_the_ct_grid(converted, tmp_path, spacing_mm):
    spec = PreprocessSpec(window=(-100, 400), spacing_mm=spacing_mm, input_size=48)
    out = tmp_path / "ircad01.npz"
    preprocess_case(converted / "ct.nii.gz", converted / "liver.nii.gz", "ircad01", spec, out)
    grid = load_npz(out)
    assert grid["image"].shape == grid["label"].shape
    assert grid["image"].shape[1:] == (48, 48) and grid["image"].dtype == np.float32
    assert 0.0 <= grid["image"].min() and grid["image"].max() <= 1.0
    # The label, mapped back, is the original mask up to the resolution of the model grid.
    back = to_original_grid(grid["label"].astype(np.float32), grid)
    liver = sitk.ReadImage(str(converted / "liver.nii.gz"))
    assert back.GetSize() == liver.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), liver.GetOrigin())
    score = dice(sitk.GetArrayFromImage(back).astype(bool), sitk.GetArrayFromImage(liver).astype(bool))
    assert score > 0.9


def test_window_bounds_map_to_zero_and_one(converted, tmp_path):
    spec = PreprocessSpec(window=(0, 100), spacing_mm=None, input_size=32)
    grid = preprocess_case(
        converted / "ct.nii.gz", converted / "liver.nii.gz", "ircad01", spec, tmp_path / "a.npz"
    )
    # float32 scaling: the bounds land on 0 and 1 up to a few ulps.
    assert grid["image"].min() == pytest.approx(0.0, abs=1e-6)
    assert grid["image"].max() == pytest.approx(1.0, abs=1e-6)
    assert tuple(grid["window"]) == (0, 100)


def test_bad_preprocess_input_is_named_and_writes_nothing(tmp_path, converted):
    out = tmp_path / "x.npz"
    with pytest.raises(PreprocessError, match="missing.nii.gz"):
        preprocess_case(
            tmp_path / "missing.nii.gz", converted / "liver.nii.gz", "ircad01", PreprocessSpec(), out
        )
    assert not out.exists() and not list(tmp_path.glob("*.npz*"))
    with pytest.raises(ValueError, match="preprocess.window"):
        PreprocessSpec(window=(400, -100))


def test_default_ratio_split_is_6_2_2_by_patient_and_seeded():
    splits = make_splits(CASES, {"mode": "ratios", "ratios": [0.6, 0.2, 0.2], "seed": 0})
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == CASES
    assert splits == make_splits(CASES, {"mode": "ratios", "ratios": [0.6, 0.2, 0.2], "seed": 0})
    assert splits != make_splits(CASES, {"mode": "ratios", "ratios": [0.6, 0.2, 0.2], "seed": 1})


def test_kfold_test_sets_cover_every_case_once():
    tests = []
    for fold in range(5):
        s = make_splits(CASES, {"mode": "kfold", "folds": 5, "fold": fold, "seed": 3})
        assert not set(s["test"]) & set(s["train"] + s["val"])
        tests += s["test"]
    assert sorted(tests) == CASES


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"mode": "explicit", "train": ["ircad01"], "test": ["ircad01"]}, "both split.train and split.test"),
        ({"mode": "explicit", "train": ["ircad01"], "val": [], "test": []}, "test set is empty"),
        (
            {"mode": "explicit", "train": ["ircad01"], "test": ["ircad99"]},
            "split.test names cases",
        ),
        ({"mode": "ratios", "ratios": [1, 0, 0]}, "test set is empty"),
        ({"mode": "kfold", "folds": 5, "fold": 5}, "split.fold"),
    ],
)
def test_impossible_splits_are_refused(cfg, message):
    with pytest.raises(SplitError, match=message):
        make_splits(CASES, cfg)


def test_intensity_baseline_fails_on_organs_that_touch_the_liver():
    """A known answer: an isolated bright blob is found exactly; one touching a same-HU organ is not."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-80, 5, size=(12, 40, 40))
    liver = np.zeros(hu.shape, bool)
    liver[2:10, 5:20, 5:20] = True
    hu[liver] = 100
    case = Case("a", hu.copy(), liver)
    assert evaluate_baseline([case], [case])["mean_dice"] == pytest.approx(1.0)
    touching = hu.copy()
    touching[2:10, 20:35, 5:20] = 100  # a neighbour at liver HU
    case2 = Case("b", touching, liver)
    assert evaluate_baseline([case], [case2])["mean_dice"] == pytest.approx(2 / 3, abs=0.01)


@pytest.mark.parametrize("cfg", [{"mode": "ratios", "ratios": [6, 2, 6], "seed": 0},
                                 {"mode": "kfold", "folds": 3, "fold": 1, "seed": 2, "val_ratio": 0.2}])
def test_extra_test_cases_leave_train_and_validation_unchanged(cfg):
    base = [f"ircad{p:02d}" for p in range(1, 15)]
    more = [f"ircad{p:02d}" for p in range(1, 29)]
    before = make_splits(base, cfg)
    after = make_splits(more, {**cfg, "test_extra": 14})
    assert after["train"] == before["train"] and after["val"] == before["val"]
    assert after["test"] == sorted(before["test"] + more[14:])
    assert after["test_extra"] == more[14:] and "test_extra" not in before


def test_extra_test_cases_past_99_patients_are_the_highest_numbers():
    """ircad100 sorts between ircad10 and ircad11 as text: the added cases are chosen by number."""
    cfg = {"mode": "ratios", "ratios": [6, 4, 10], "seed": 0}
    before = make_splits([f"ircad{p:02d}" for p in range(1, 21)], cfg)
    after = make_splits([f"ircad{p:02d}" for p in range(1, 161)], {**cfg, "test_extra": 140})
    assert after["train"] == before["train"] and after["val"] == before["val"]
    assert sorted(after["test_extra"]) == sorted(f"ircad{p:02d}" for p in range(21, 161))


def test_test_extra_must_leave_cases_to_split():
    with pytest.raises(SplitError, match="split.test_extra must be at least 0 and leave cases to split"):
        make_splits(["a", "b", "c", "d"], {"test_extra": 4})
