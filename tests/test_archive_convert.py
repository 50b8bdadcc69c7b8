"""Synthesize -> convert round trip, the IRCADb quirks, and every bad input of convert."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from varprune.data.archive import TUMOUR_FOLDER, ArchiveError, is_debris, natural_key
from varprune.data.convert import convert_case
from varprune.data.phantom import make_phantom
from varprune.data.synthetic import write_synthetic_archive

from .conftest import TINY, rewrite_inner


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("patient", [1, 2, 3])
def test_round_trip_recovers_the_drawn_liver_slice_by_slice(tiny_archive, tmp_path, patient):
    phantom = make_phantom(TINY.seed, patient, TINY.size, (TINY.slices_min, TINY.slices_max))
    meta = convert_case(tiny_archive, f"ircad{patient:02d}", tmp_path)
    assert meta["slices"] == phantom.hu.shape[0] >= 11
    liver = _array(tmp_path / "liver.nii.gz")
    assert liver.dtype == np.uint8
    for k in range(phantom.hu.shape[0]):  # slice by slice: ordering errors show as a mismatch
        np.testing.assert_array_equal(liver[k], phantom.masks["liver"][k], err_msg=f"slice {k}")
    np.testing.assert_array_equal(_array(tmp_path / "ct.nii.gz"), phantom.hu)
    ct = sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(ct.GetSpacing(), phantom.spacing, rtol=1e-4)
    np.testing.assert_allclose(ct.GetOrigin(), phantom.origin, atol=1e-3)
    assert meta["hu_min"] == phantom.hu.min() and meta["hu_max"] == phantom.hu.max()
    if phantom.tumours:
        tumour = _array(tmp_path / "tumor.nii.gz").astype(bool)
        np.testing.assert_array_equal(tumour, np.logical_or.reduce(phantom.tumours))
        assert meta["tumour_folders"]
    else:
        assert not (tmp_path / "tumor.nii.gz").exists()


def test_archive_has_the_ircadb_layout_and_quirks(tiny_archive):
    with zipfile.ZipFile(tiny_archive) as zf:
        names = set(zf.namelist())
        for n in range(1, TINY.patients + 1):
            for part in [
                "PATIENT_DICOM.zip",
                "MASKS_DICOM.zip",
                "LABELLED_DICOM.zip",
                "MESHES_VTK.zip",
                "LICENSE.txt",
                f"liver_{n}.jpg",
            ]:
                assert f"3Dircadb1/3Dircadb1.{n}/{part}" in names
        assert any(is_debris(name) for name in names)
        inner = zipfile.ZipFile(io.BytesIO(zf.read("3Dircadb1/3Dircadb1.1/PATIENT_DICOM.zip")))
        slices = [n for n in inner.namelist() if not is_debris(n)]
        assert all(n.startswith("PATIENT_DICOM/image_") and "." not in n.split("/")[-1] for n in slices)
        assert any(is_debris(n) for n in inner.namelist())
        masks = zipfile.ZipFile(io.BytesIO(zf.read("3Dircadb1/3Dircadb1.1/MASKS_DICOM.zip")))
        folders = {n.split("/")[1] for n in masks.namelist() if not is_debris(n)}
        assert "liver" in folders and len(folders) > 5
        ds = pydicom.dcmread(io.BytesIO(inner.read("PATIENT_DICOM/image_0")))
        assert ds.Modality == "CT" and float(ds.RescaleIntercept) == -1024
        hu = make_phantom(TINY.seed, 1, TINY.size, (TINY.slices_min, TINY.slices_max)).hu[0]
        np.testing.assert_array_equal(ds.pixel_array.astype(int), hu.astype(int) + 1024)
        mask = pydicom.dcmread(io.BytesIO(masks.read("MASKS_DICOM/liver/image_5")))
        assert set(np.unique(mask.pixel_array)) <= {0, 255}


def test_patients_differ_in_slices_and_spacing():
    drawn = [make_phantom(0, p, 64, (11, 40)) for p in range(1, 6)]
    assert len({p.hu.shape[0] for p in drawn}) > 1
    assert len({p.spacing for p in drawn}) > 1


def test_synthesis_is_deterministic_in_the_seed():
    a, b = make_phantom(3, 2, 48, (11, 12)), make_phantom(3, 2, 48, (11, 12))
    np.testing.assert_array_equal(a.hu, b.hu)
    assert not np.array_equal(a.hu, make_phantom(4, 2, 48, (11, 12)).hu[: a.hu.shape[0]])


def _pixels_by_member(archive) -> dict[str, bytes]:
    """Every DICOM's pixels and position, by archive path (headers carry write times)."""
    found = {}
    with zipfile.ZipFile(archive) as outer:
        for info in outer.infolist():
            try:
                inner = zipfile.ZipFile(io.BytesIO(outer.read(info)))
            except zipfile.BadZipFile:
                continue
            for member in inner.namelist():
                ds = pydicom.dcmread(io.BytesIO(inner.read(member)), force=True)
                if "PixelData" in ds:
                    found[f"{info.filename}:{member}"] = ds.PixelData + str(ds.ImagePositionPatient).encode()
    return found


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_the_archive_is_the_same_for_any_worker_count(tmp_path):
    spec = replace(TINY, patients=2, size=32)
    write_synthetic_archive(tmp_path / "one.zip", spec, workers=1)
    write_synthetic_archive(tmp_path / "two.zip", spec, workers=2)
    one, two = _pixels_by_member(tmp_path / "one.zip"), _pixels_by_member(tmp_path / "two.zip")
    assert len(one) > 40 and one == two


def test_natural_order_and_debris():
    names = ["image_10", "image_2", "image_1", "image_0"]
    assert sorted(names, key=natural_key) == ["image_0", "image_1", "image_2", "image_10"]
    for junk in ["__MACOSX/x/._image_0", "PATIENT_DICOM/._image_3", "MASKS_DICOM/.DS_Store"]:
        assert is_debris(junk)
    assert not is_debris("MASKS_DICOM/liver/image_3")


def test_tumour_folder_names_of_the_real_archive_are_recognised():
    for name in ["livertumor", "livertumor01", "livertumor07", "livertumor1", "livertumors", "tumor"]:
        assert TUMOUR_FOLDER.match(name), name
    for name in ["liver", "liverkyst", "livercyst", "portalvein1", "Stones", "metal"]:
        assert not TUMOUR_FOLDER.match(name), name


def test_one_patient_zip_converts_too(tiny_archive, tmp_path):
    single = tmp_path / "3Dircadb1.2.zip"
    with zipfile.ZipFile(tiny_archive) as src, zipfile.ZipFile(single, "w") as dst:
        for info in src.infolist():
            if info.filename.startswith("3Dircadb1/3Dircadb1.2/"):
                dst.writestr(info.filename.removeprefix("3Dircadb1/"), src.read(info))
    meta = convert_case(single, "ircad02", tmp_path / "out")
    assert meta["liver_voxels"] > 0


def _drop_liver_slice(members):
    return {k: v for k, v in members.items() if k != "MASKS_DICOM/liver/image_4"}


def _no_liver(members):
    return {k: v for k, v in members.items() if "/liver/" not in k}


def _text_slice(members):
    return {**members, "PATIENT_DICOM/image_3": b"this is not a DICOM file\n" * 20}


def _escaping_path(members):
    return {**members, "../../evil.txt": b"owned"}


@pytest.mark.parametrize(
    "inner, change, message",
    [
        ("MASKS_DICOM.zip", lambda m: b"PK\x03\x04 garbage", "MASKS_DICOM.zip is a corrupt zip"),
        ("MASKS_DICOM.zip", _no_liver, "has no 'liver' folder"),
        (
            "MASKS_DICOM.zip",
            _drop_liver_slice,
            "liver has {less} slices but PATIENT_DICOM has {n}",
        ),
        ("PATIENT_DICOM.zip", _text_slice, "PATIENT_DICOM/image_3 is not a DICOM file"),
        ("PATIENT_DICOM.zip", _escaping_path, "escapes the target folder"),
    ],
    ids=["corrupt-inner-zip", "missing-liver", "slice-count", "non-dicom", "path-traversal"],
)
def test_bad_case_stops_with_a_message_and_writes_nothing(tiny_archive, tmp_path, inner, change, message):
    patient = 1
    n_slices = make_phantom(TINY.seed, patient, TINY.size, (TINY.slices_min, TINY.slices_max)).hu.shape[0]
    message = message.format(less=n_slices - 1, n=n_slices)
    bad = rewrite_inner(tiny_archive, tmp_path / "bad.zip", patient, inner, change)
    out = tmp_path / "out"
    with pytest.raises(ArchiveError, match="ircad01") as err:
        convert_case(bad, "ircad01", out)
    assert message in str(err.value)
    assert not out.exists() or not any(out.iterdir())
    assert not (tmp_path.parent / "evil.txt").exists()
    # The other cases of the same archive still convert.
    assert convert_case(bad, "ircad02", tmp_path / "other")["liver_voxels"] > 0


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
    bogus = tmp_path / "3Dircadb1.zip"
    bogus.write_text("<html>login page</html>")
    with pytest.raises(ArchiveError, match="3Dircadb1.zip is not a readable zip"):
        convert_case(bogus, "ircad01", tmp_path / "out")
