"""NIfTI sources (MSD Task03_Liver layout, LiTS naming): discovery, conversion, and every bad input."""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from varprune.data.nifti import NiftiError, NiftiSource, convert_nifti_case, discover_cases
from varprune.data.preprocess import PreprocessSpec, preprocess_case

SHAPE = (12, 40, 48)  # (z, y, x): 48 x 40 x 12 voxels
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-20.0, -15.0, 30.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _draw(seed: int, tumour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A tiny CT (int16 HU: air around an elliptic body, a liver, maybe a tumour) and its label map."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    body = ((x - 24) / 19) ** 2 + ((y - 20) / 15) ** 2 < 1
    liver = ((x - 17 - seed % 3) / 8) ** 2 + ((y - 18) / 7) ** 2 + ((z - 6) / 5) ** 2 < 1
    label = liver.astype(np.uint8)
    if tumour:
        label[((x - 16) / 3) ** 2 + ((y - 18) / 3) ** 2 + ((z - 6) / 2) ** 2 < 1] = 2
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 8, SHAPE)
    hu[label == 1] = 60 + rng.normal(0, 8, int((label == 1).sum()))
    hu[label == 2] = 15 + rng.normal(0, 8, int((label == 2).sum()))
    return np.round(hu).astype(np.int16), label


def _image(array: np.ndarray, flipped: bool = False) -> sitk.Image:
    """`array` on the test grid; `flipped`: the same physical voxels stored with x and y reversed."""
    if not flipped:
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(ORIGIN)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[:, ::-1, ::-1]))
        nz, ny, nx = array.shape
        image.SetOrigin((ORIGIN[0] + (nx - 1) * SPACING[0], ORIGIN[1] + (ny - 1) * SPACING[1], ORIGIN[2]))
        image.SetDirection(FLIPPED)
    image.SetSpacing(SPACING)
    return image


def _write(path: Path, image: sitk.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(_read(path))


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory) -> Path:
    """Task03_Liver layout: liver_0, liver_2 (= liver_0 stored flipped), liver_10 (no tumour), debris."""
    root = tmp_path_factory.mktemp("Task03_Liver")
    cases = {"liver_0": (_draw(0), False), "liver_2": (_draw(0), True),
             "liver_10": (_draw(1, tumour=False), False)}
    training = []
    for case, ((hu, label), flipped) in cases.items():
        _write(root / "imagesTr" / f"{case}.nii.gz", _image(hu, flipped))
        _write(root / "labelsTr" / f"{case}.nii.gz", _image(label, flipped))
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    for folder in ("imagesTr", "labelsTr"):  # AppleDouble files of a tarball packed on a Mac
        (root / folder / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    (root / "imagesTr" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "training": training, "test": []}))
    return root


def _with_scaling(path: Path, slope: float, inter: float) -> None:
    """Set scl_slope/scl_inter in an uncompressed NIfTI-1 header (bytes 112-119)."""
    data = bytearray(path.read_bytes())
    assert struct.unpack("<i", data[:4])[0] == 348
    data[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def lits_root(tmp_path_factory) -> Path:
    """LiTS naming in one folder: volume-0 (float32 HU), volume-3 (int16 + scl_inter), volume-1 (no label)."""
    root = tmp_path_factory.mktemp("LiTS")
    hu, label = _draw(2)
    floating = hu.astype(np.float32)
    floating[0, 0, :4] = [-1000.4, -999.6, -1000.5, 32800.0]
    _write(root / "volume-0.nii", _image(floating))
    _write(root / "segmentation-0.nii", _image(label))
    stored = _write(root / "volume-3.nii", _image((hu + 1024).astype(np.int16)))
    _with_scaling(stored, 1.0, -1024.0)
    _write(root / "segmentation-3.nii", _image(label))
    _write(root / "volume-1.nii", _image(hu))
    return root


def _lits(root: Path, **kwargs) -> NiftiSource:
    return NiftiSource(root=root, layout="folders", images=".", labels=".", image_pattern="volume-{id}.nii",
                       label_pattern="segmentation-{id}.nii", **kwargs)


def test_msd_discovery_is_in_natural_order_and_ignores_debris(msd_root):
    found = discover_cases(NiftiSource(root=msd_root, layout="msd"))
    assert list(found) == ["liver_0", "liver_2", "liver_10"]
    assert found["liver_10"] == (msd_root / "imagesTr/liver_10.nii.gz", msd_root / "labelsTr/liver_10.nii.gz")
    # The same folders by file pattern (no dataset.json needed) give the same pairs.
    assert discover_cases(NiftiSource(root=msd_root, layout="folders")) == found
    chosen = discover_cases(NiftiSource(root=msd_root, layout="msd", cases=("liver_10", "liver_0")))
    assert list(chosen) == ["liver_0", "liver_10"]


def test_lits_discovery_returns_a_missing_label_for_the_job_to_report(lits_root):
    found = discover_cases(_lits(lits_root))
    assert list(found) == ["volume-0", "volume-1", "volume-3"]
    assert found["volume-3"] == (lits_root / "volume-3.nii", lits_root / "segmentation-3.nii")
    assert not found["volume-1"][1].exists()


def test_from_config_reads_the_data_section(tmp_path):
    pattern = {"image": "volume-{id}.nii", "label": "segmentation-{id}.nii"}
    nifti = {"root": str(tmp_path), "images": ".", "labels": ".", "pattern": pattern,
             "cases": ["volume-1", 2], "liver_labels": [1, 2], "tumor_labels": [2]}
    assert NiftiSource.from_config({"layout": "folders", "nifti": nifti}) == NiftiSource(
        root=tmp_path, layout="folders", images=".", labels=".", image_pattern="volume-{id}.nii",
        label_pattern="segmentation-{id}.nii", cases=("volume-1", "2"), liver_labels=(1, 2),
        tumor_labels=(2,))
    assert NiftiSource.from_config({"layout": "msd", "nifti": {"root": "x"}}) == NiftiSource(Path("x"), "msd")


@pytest.mark.parametrize("case, flipped, tumour", [("liver_0", False, True), ("liver_2", True, True),
                                                   ("liver_10", False, False)])
def test_msd_case_converts_on_the_source_grid(msd_root, tmp_path, case, flipped, tumour):
    image, label = discover_cases(NiftiSource(root=msd_root, layout="msd"))[case]
    meta = convert_nifti_case(image, label, case, tmp_path, liver_labels=(1, 2), tumor_labels=(2,))
    source, labels = _read(image), _array(label)
    ct = _read(tmp_path / "ct.nii.gz")
    assert ct.GetPixelID() == sitk.sitkInt16
    assert ct.GetSize() == source.GetSize()
    np.testing.assert_allclose(ct.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(ct.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct.GetDirection(), FLIPPED if flipped else np.eye(3).ravel(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(source))
    liver = _read(tmp_path / "liver.nii.gz")
    assert liver.GetPixelID() == sitk.sitkUInt8
    for mask in [liver] + ([_read(tmp_path / "tumor.nii.gz")] if tumour else []):
        assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
            ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(liver), np.isin(labels, (1, 2)))
    assert meta["liver_voxels"] == int(np.isin(labels, (1, 2)).sum()) > 0
    assert meta["tumor_voxels"] == int((labels == 2).sum())
    if tumour:
        assert meta["tumor_voxels"] > 0
        np.testing.assert_array_equal(_array(tmp_path / "tumor.nii.gz"), labels == 2)
        assert meta["label_values"] == [0, 1, 2]
    else:
        assert not (tmp_path / "tumor.nii.gz").exists() and meta["label_values"] == [0, 1]
    assert meta["case"] == case and meta["image"] == f"{case}.nii.gz" and meta["label"] == f"{case}.nii.gz"
    assert meta["size"] == [48, 40, 12] and meta["slices"] == 12
    assert json.loads((tmp_path / "meta.json").read_text()) == meta


def test_a_flipped_case_keeps_its_orientation_and_preprocesses_like_the_original(msd_root, tmp_path):
    found = discover_cases(NiftiSource(root=msd_root, layout="msd"))
    spec = PreprocessSpec(input_size=32, spacing_mm=1.5)
    arrays = {}
    for case in ("liver_0", "liver_2"):
        out = tmp_path / case
        convert_nifti_case(*found[case], case, out, liver_labels=(1, 2), tumor_labels=(2,))
        arrays[case] = preprocess_case(out / "ct.nii.gz", out / "liver.nii.gz", case, spec,
                                       tmp_path / f"{case}.npz")
    np.testing.assert_allclose(_read(tmp_path / "liver_2/ct.nii.gz").GetDirection(), FLIPPED, atol=1e-6)
    np.testing.assert_allclose(arrays["liver_2"]["image"], arrays["liver_0"]["image"], atol=1e-5)
    np.testing.assert_array_equal(arrays["liver_2"]["label"], arrays["liver_0"]["label"])
    assert arrays["liver_0"]["label"].sum() > 0


def test_a_float_ct_becomes_rounded_int16(lits_root, tmp_path):
    image, label = discover_cases(_lits(lits_root))["volume-0"]
    meta = convert_nifti_case(image, label, "volume-0", tmp_path)
    ct = _array(tmp_path / "ct.nii.gz")
    assert ct.dtype == np.int16
    assert ct[0, 0, :4].tolist() == [-1000, -1000, -1000, 32767]  # half up (as ITK), clamped
    source = _array(image)
    np.testing.assert_array_equal(ct[1:], source[1:].astype(np.int16))
    assert meta["hu_max"] == 32767
    assert meta["image"] == "volume-0.nii" and meta["label"] == "segmentation-0.nii"


def test_the_nifti_scaling_is_applied(lits_root, tmp_path):
    image, label = discover_cases(_lits(lits_root))["volume-3"]
    convert_nifti_case(image, label, "volume-3", tmp_path)
    np.testing.assert_array_equal(_array(tmp_path / "ct.nii.gz"), _draw(2)[0])


def test_unexpected_label_values_are_logged_and_count_as_background(tmp_path, caplog):
    hu, label = _draw(0)
    label[0, :2, :2] = 7
    image = _write(tmp_path / "in/ct.nii.gz", _image(hu))
    seg = _write(tmp_path / "in/seg.nii.gz", _image(label))
    with caplog.at_level(logging.WARNING, logger="varprune.data.nifti"):
        meta = convert_nifti_case(image, seg, "c7", tmp_path / "out")
    assert meta["label_values"] == [0, 1, 2, 7] and "{7: 4}" in caplog.text
    assert meta["liver_voxels"] == int(np.isin(label, (1, 2)).sum())


def test_a_missing_label_is_named(lits_root, tmp_path):
    image, label = discover_cases(_lits(lits_root))["volume-1"]
    out = tmp_path / "out"
    with pytest.raises(NiftiError, match=re.escape(f"volume-1: no label {label} for image {image}")):
        convert_nifti_case(image, label, "volume-1", out)
    assert not out.exists()


def _other_size(hu, label):
    return _image(hu), _image(label[:, :, :-1])


def _shifted_origin(hu, label):
    moved = _image(label)
    moved.SetOrigin((ORIGIN[0], ORIGIN[1] + 2.0, ORIGIN[2]))
    return _image(hu), moved


def _half_labels(hu, label):
    values = label.astype(np.float32)
    values[5, 20, 20] = 0.5
    return _image(hu), _image(values)


def _four_d(hu, label):
    return sitk.JoinSeries([_image(hu), _image(hu)]), _image(label)


def _no_liver(hu, label):
    return _image(hu), _image(np.where(label > 0, 3, 0).astype(np.uint8))


def _no_air(hu, label):
    return _image((hu + 1024).astype(np.int16)), _image(label)


@pytest.mark.parametrize(
    "make, bad, message",
    [
        (_other_size, "label",
         "is not on the grid of {image}: size (47, 40, 12) voxels vs (48, 40, 12) voxels"),
        (_shifted_origin, "label",
         "is not on the grid of {image}: origin (-20, -13, 30) mm vs (-20, -15, 30) mm"),
        (_half_labels, "label", "has non-integer label values (e.g. 0.5)"),
        (_four_d, "image", "is 4D, size (48, 40, 12, 2); expected a 3D volume"),
        (_no_liver, "label", "has no liver voxel (no value in [1, 2]; values present: [0, 3])"),
        (_no_air, "image", "no air, so this is not a CT in HU"),
    ],
    ids=["label-size", "label-origin", "non-integer-label", "4d-image", "empty-liver", "no-air"],
)
def test_a_bad_case_is_named_and_writes_nothing(tmp_path, make, bad, message):
    ct, seg = make(*_draw(0))
    paths = {"image": _write(tmp_path / "in/ct.nii.gz", ct), "label": _write(tmp_path / "in/seg.nii.gz", seg)}
    out = tmp_path / "out"
    with pytest.raises(NiftiError, match=re.escape(f"case7: {paths[bad]}")) as err:
        convert_nifti_case(paths["image"], paths["label"], "case7", out)
    assert message.format(**paths) in str(err.value)
    assert not out.exists()


def test_an_unreadable_label_is_named(tmp_path):
    hu, _ = _draw(0)
    image = _write(tmp_path / "ct.nii.gz", _image(hu))
    seg = tmp_path / "seg.nii.gz"
    seg.write_bytes(b"<html>login page</html>")
    with pytest.raises(NiftiError, match=re.escape(f"case7: {seg}: not a readable NIfTI file")):
        convert_nifti_case(image, seg, "case7", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_msd_layout_needs_dataset_json(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(NiftiError, match=re.escape(f"{tmp_path / 'dataset.json'} does not exist")):
        discover_cases(NiftiSource(root=tmp_path, layout="msd"))


def test_a_case_id_that_is_no_file_name_is_refused(tmp_path):
    hu, _ = _draw(0)
    _write(tmp_path / "imagesTr/my case.nii.gz", _image(hu))
    bad = tmp_path / "imagesTr/my case.nii.gz"
    with pytest.raises(NiftiError, match=re.escape(f"{bad}: the case id 'my case'")):
        discover_cases(NiftiSource(root=tmp_path, layout="folders"))


def test_unknown_cases_are_listed(msd_root):
    listed = msd_root / "dataset.json"
    with pytest.raises(NiftiError, match=re.escape(f"not found in {listed}: liver_5, liver_99")):
        discover_cases(NiftiSource(root=msd_root, layout="msd", cases=("liver_0", "liver_5", "liver_99")))


def test_no_matching_image_names_pattern_and_folder(lits_root, tmp_path):
    with pytest.raises(NiftiError, match=re.escape(f"no image matching 'vol-{{id}}.nii' in {lits_root}")):
        discover_cases(NiftiSource(root=lits_root, layout="folders", images=".",
                                   image_pattern="vol-{id}.nii"))
    missing = tmp_path / "imagesTr"
    with pytest.raises(NiftiError, match=re.escape(f"the images folder {missing} does not exist")):
        discover_cases(NiftiSource(root=tmp_path, layout="folders"))


def test_two_images_with_one_case_id_are_refused(tmp_path):
    hu, _ = _draw(0)
    _write(tmp_path / "a/liver_0.nii.gz", _image(hu))
    _write(tmp_path / "a/liver_0.nii", _image(hu))
    with pytest.raises(NiftiError, match="two images give the case id 'liver_0'"):
        discover_cases(NiftiSource(root=tmp_path, layout="folders", images="a", image_pattern="{id}"))
