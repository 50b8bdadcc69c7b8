"""Real inputs that used to give a wrong answer with exit code 0: another orientation, DICOM
tags that are missing or inconsistent, non-finite and thin CTs, and bad predict options."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from varprune.app.cli import main
from varprune.core.atomic import atomic_path
from varprune.data.archive import ArchiveError
from varprune.data.convert import convert_case
from varprune.data.phantom import make_phantom
from varprune.data.preprocess import (
    PreprocessSpec,
    canonical,
    is_orientation,
    preprocess_arrays,
    preprocess_case,
)
from varprune.engine.evaluate import dice, evaluate_checkpoint
from varprune.model.network import read_checkpoint

from . import probes
from .conftest import TINY, rewrite_inner
from .workflow_helpers import threads_for_tests


def orientation_of(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


# ---- orientation ----

def test_orientation_codes_and_canonical_layout():
    assert is_orientation("LPS") and is_orientation("SAR") and not is_orientation("LLS")
    assert not is_orientation("LP") and not is_orientation("lps")
    with pytest.raises(ValueError, match="preprocess.orientation"):
        PreprocessSpec(orientation="XYZ")
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    for code, flips in probes.FLIPS.items():
        stored = sitk.Flip(image, flips)
        assert orientation_of(stored) == code
        np.testing.assert_array_equal(sitk.GetArrayFromImage(canonical(stored)),
                                      sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("code", [c for c in probes.FLIPS if c != "LPS"])
def test_preprocessing_sees_the_same_patient_in_every_orientation(code):
    phantom = make_phantom(TINY.seed, 1, TINY.size, (TINY.slices_min, TINY.slices_max))
    ct = sitk.GetImageFromArray(phantom.hu.astype(np.float32))
    ct.SetSpacing(phantom.spacing)
    ct.SetOrigin(phantom.origin)
    liver = sitk.GetImageFromArray(phantom.masks["liver"].astype(np.uint8))
    liver.CopyInformation(ct)
    spec = PreprocessSpec(spacing_mm=6.0, input_size=32)
    reference = preprocess_arrays(ct, liver, spec)
    stored, stored_liver = sitk.Flip(ct, probes.FLIPS[code]), sitk.Flip(liver, probes.FLIPS[code])
    arrays = preprocess_arrays(stored, stored_liver, spec)
    np.testing.assert_allclose(arrays["image"], reference["image"], atol=1e-5)
    np.testing.assert_array_equal(arrays["label"], reference["label"])
    assert tuple(arrays["source_direction"]) == stored.GetDirection()  # maps back onto the stored grid


@pytest.fixture(scope="module")
def trained(done_run):
    """The tiny run's dense model (trained, so its masks are livers) and its test case."""
    case = json.loads((done_run / "data" / "splits.json").read_text())["test"][0]
    model = done_run / "results" / "tiny" / "dense" / "model.pt"
    provenance = read_checkpoint(model)["provenance"]
    return {"model": model, "case": case, "patient": int(case[5:]), "run": done_run,
            "prep": PreprocessSpec.from_config(provenance["config"]["preprocess"]),
            "archive": done_run / "data" / "raw" / "3Dircadb1.zip",
            "nifti": done_run / "data" / "nifti" / case / "ct.nii.gz"}


def _predict(model: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--model", str(model), "--input", str(source), "--output", str(out),
                 "--threads", str(threads_for_tests() or 1), *extra])


@pytest.mark.workflow
def test_predict_gives_the_same_mask_in_every_orientation(trained, tmp_path):
    ct = sitk.ReadImage(str(trained["nifti"]))
    masks = {}
    for code, flips in probes.FLIPS.items():
        stored = sitk.Flip(ct, flips)
        source, out = tmp_path / f"{code}.nii.gz", tmp_path / f"{code}-mask.nii.gz"
        sitk.WriteImage(stored, str(source))
        assert _predict(trained["model"], source, out) == 0
        mask = sitk.ReadImage(str(out))
        assert mask.GetDirection() == stored.GetDirection() and mask.GetSize() == stored.GetSize()
        back = sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor)  # onto the LPS grid
        masks[code] = sitk.GetArrayFromImage(back)
    assert masks["LPS"].sum() > 100  # a liver, not an empty mask that trivially agrees
    assert read_checkpoint(trained["model"])["provenance"]["config"]["preprocess"]["orientation"] == "LPS"
    for code, mask in masks.items():
        assert dice(mask, masks["LPS"]) >= 0.99, code


def _convert_and_evaluate(trained: dict, archive: Path, root: Path) -> tuple[sitk.Image, float]:
    """convert -> preprocess -> evaluate one case, as the pipeline's rules do."""
    case = trained["case"]
    convert_case(archive, case, root / "nifti" / case)
    preprocess_case(root / "nifti" / case / "ct.nii.gz", root / "nifti" / case / "liver.nii.gz", case,
                    trained["prep"], root / "preprocessed" / f"{case}.npz")
    rows = evaluate_checkpoint(trained["model"], [root / "preprocessed" / f"{case}.npz"],
                               [root / "nifti" / case / "liver.nii.gz"], root / "metrics.csv", root / "pred",
                               threads=threads_for_tests() or 1)
    return sitk.ReadImage(str(root / "pred" / f"{case}.nii.gz")), rows[0]["dice"]


@pytest.mark.workflow
def test_pipeline_gives_the_same_mask_in_every_stored_orientation(trained, tmp_path):
    reference, reference_dice = _convert_and_evaluate(trained, trained["archive"], tmp_path / "LPS")
    assert reference_dice > 0.2 and sitk.GetArrayViewFromImage(reference).any()  # a liver, however rough
    for code, flips in probes.FLIPS.items():
        if code == "LPS":
            continue
        archive = probes.archive_with(trained["archive"], tmp_path / f"{code}.zip", trained["patient"],
                                probes.flip(flips), masks_too=True)
        pred, score = _convert_and_evaluate(trained, archive, tmp_path / code)
        stored = sitk.ReadImage(str(tmp_path / code / "nifti" / trained["case"] / "ct.nii.gz"))
        # A mirrored row direction also turns the slice normal (x-flip: RPI); a reversed file
        # order is sorted back by position (stored as LPS). Either way the mask must agree.
        assert (orientation_of(stored) == "LPS") == (code == "LPI"), code
        back = sitk.Resample(pred, reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        assert dice(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(reference)) >= 0.99, code
        assert score == pytest.approx(reference_dice, abs=0.01), code


# ---- DICOM tags ----

P = "PATIENT_DICOM/image_"


@pytest.mark.parametrize("edit, masks_too, message", [
    (probes.drop("RescaleIntercept", "RescaleSlope"), False, "PATIENT_DICOM/image_0: no RescaleIntercept"),
    (probes.drop("RescaleSlope", only=4), False, f"{P}4: RescaleIntercept (0028,1052) without"),
    (probes.drop("RescaleIntercept", only=2), False, "image_2: no RescaleIntercept (0028,1052), which other"),
    (probes.drop("PixelSpacing", only=3), False, "PATIENT_DICOM/image_3: no PixelSpacing (0028,0030)"),
    (probes.set_tag("PixelSpacing", "0.7", only=1), False, f"{P}1: PixelSpacing (0028,0030) is"),
    (probes.drop("ImagePositionPatient", only=5), False, "PATIENT_DICOM/image_5: no ImagePositionPatient"),
    (probes.drop("ImageOrientationPatient", only=0), False, f"{P}0: no ImageOrientationPatient"),
    (probes.set_tag("ImageOrientationPatient", ["1", "0", "0", "0", "0", "-1"], only=3), False,
     f"{P}3: ImageOrientationPatient (0020,0037) differs from"),
    (probes.set_tag("Modality", "MR"), False, "PATIENT_DICOM/image_0: Modality (0008,0060) is MR, not CT"),
    (probes.without_slice(5), True, "PATIENT_DICOM/image_4 -> PATIENT_DICOM/image_6: slice gap"),
    (probes.same_position(6, as_slice=5), False, f"{P}5 and {P}6: two slices at"),
])
def test_missing_or_inconsistent_dicom_tags_stop_convert(tiny_archive, tmp_path, edit, masks_too, message):
    archive = probes.archive_with(tiny_archive, tmp_path / "edited.zip", 2, edit, masks_too)
    out = tmp_path / "out"
    with pytest.raises(ArchiveError) as err:
        convert_case(archive, "ircad02", out)
    assert str(err.value).startswith("ircad02: ") and message in str(err.value), str(err.value)
    assert not out.exists() or not any(out.iterdir())


def test_assume_hu_is_the_escape_hatch_and_signed_hu_is_accepted(tiny_archive, tmp_path, caplog):
    unscaled = probes.archive_with(tiny_archive, tmp_path / "unscaled.zip", 2,
                             probes.drop("RescaleIntercept", "RescaleSlope"))
    meta = convert_case(unscaled, "ircad02", tmp_path / "assumed", assume_hu=True)
    assert meta["hu_min"] >= 0 and "assume_hu is set" in caplog.text  # as asked, with a warning
    signed = probes.archive_with(tiny_archive, tmp_path / "signed.zip", 2, probes.stored_as_hu)
    meta = convert_case(signed, "ircad02", tmp_path / "signed")
    reference = convert_case(tiny_archive, "ircad02", tmp_path / "reference")
    assert meta["hu_min"] == reference["hu_min"] < -500
    assert meta["liver_volume_ml"] == reference["liver_volume_ml"]


@pytest.mark.workflow
def test_predict_refuses_missing_tags_naming_the_users_file(trained, tmp_path, capsys):
    patient_zip = tmp_path / "patient.zip"
    edited = probes.archive_with(trained["archive"], tmp_path / "edited.zip", trained["patient"],
                           probes.drop("RescaleIntercept", "RescaleSlope"))
    with zipfile.ZipFile(edited) as src, zipfile.ZipFile(patient_zip, "w") as dst:
        for info in src.infolist():
            if f"3Dircadb1.{trained['patient']}/" in info.filename:
                dst.writestr(info, src.read(info))
    out = tmp_path / "mask.nii.gz"
    assert _predict(trained["model"], patient_zip, out) == 1
    err = capsys.readouterr().err
    assert f"{patient_zip}:" in err and "no RescaleIntercept (0028,1052)" in err and "--assume-hu" in err, err
    assert tempfile.gettempdir() not in err.replace(str(tmp_path), "") and not out.exists()
    assert _predict(trained["model"], patient_zip, out, "--assume-hu") == 0


# ---- non-finite and thin CTs ----

@pytest.mark.workflow
def test_non_finite_ct_is_refused_and_a_trace_is_replaced(trained, tmp_path, capsys, caplog):
    ct = sitk.Cast(sitk.ReadImage(str(trained["nifti"])), sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(ct)

    def write(array: np.ndarray, name: str) -> Path:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(tmp_path / name))
        return tmp_path / name

    out = tmp_path / "mask.nii.gz"
    nan = np.full_like(values, np.nan)
    assert _predict(trained["model"], write(nan, "nan.mha"), out) == 1
    assert "100.0% of the voxels are NaN or infinite" in capsys.readouterr().err and not out.exists()
    # ITK's NIfTI reader turns NaN into 0: a CT without air is refused instead.
    assert _predict(trained["model"], write(nan, "nan.nii.gz"), out) == 1
    assert "no air, so this is not a CT in HU" in capsys.readouterr().err and not out.exists()
    values.flat[:3] = [np.nan, np.inf, -np.inf]
    assert _predict(trained["model"], write(values, "trace.mha"), out) == 0
    assert "3 NaN/infinite voxel(s)" in caplog.text


def _series(trained: dict, tmp_path: Path, keep: int) -> Path:
    """A plain DICOM folder of the test patient's middle `keep` slices."""
    with zipfile.ZipFile(trained["archive"]) as archive:
        wanted = f"3Dircadb1.{trained['patient']}/PATIENT_DICOM.zip"
        inner = next(n for n in archive.namelist() if n.endswith(wanted))
        members = zipfile.ZipFile(io.BytesIO(archive.read(inner)))
        slices = sorted((n for n in members.namelist() if probes.is_slice(n)), key=probes.slice_number)
        middle = len(slices) // 2
        folder = tmp_path / f"series{keep}"
        folder.mkdir()
        for name in slices[middle:middle + keep]:
            (folder / Path(name).name).write_bytes(members.read(name))
    return folder


@pytest.mark.workflow
@pytest.mark.parametrize("keep", [1, 3])
def test_one_and_three_slice_series_get_a_mask_on_their_grid(trained, tmp_path, keep):
    folder = _series(trained, tmp_path, keep)
    out = tmp_path / "mask.nii.gz"
    assert _predict(trained["model"], folder, out) == 0
    mask = sitk.ReadImage(str(out))
    first = sitk.ReadImage(str(sorted(folder.iterdir(), key=lambda p: probes.slice_number(p.name))[0]))
    assert mask.GetSize()[2] == keep and mask.GetSize()[:2] == first.GetSize()[:2]
    assert mask.GetOrigin() == pytest.approx(first.GetOrigin())
    assert mask.GetDirection() == first.GetDirection()
    assert mask.GetSpacing()[:2] == pytest.approx(first.GetSpacing()[:2])


# ---- predict options ----

@pytest.mark.workflow
@pytest.mark.parametrize("args, message", [
    (["--output", "{tmp}/mask.png"], "the mask needs a NIfTI name"),
    (["--threads", "-2"], "--threads -2: give a positive number"),
    (["--batch-size", "0"], "--batch-size 0: give a positive number"),
    (["--output", "{input}"], "the output would overwrite an input"),
    (["--preview", "{tmp}/preview.jpg"], "the preview is a PNG"),
])
def test_bad_predict_options_fail_before_any_work(trained, tmp_path, capsys, args, message):
    names = {"tmp": tmp_path, "input": trained["nifti"]}
    argv = ["predict", "--model", str(trained["model"]), "--input", str(trained["nifti"]),
            "--output", str(tmp_path / "mask.nii.gz")]
    argv += [a.format(**names) for a in args]
    before = trained["nifti"].read_bytes()
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()) and trained["nifti"].read_bytes() == before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_up_front(tmp_path, capsys):
    code = main(["predict", "--model", str(tmp_path / "m.pt"), "--input", str(tmp_path / "ct.nii.gz"),
                 "--output", str(tmp_path / "mask.nii.gz"), "--device", "cuda"])
    assert code == 1 and "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.workflow
def test_a_failed_preview_leaves_neither_file(trained, tmp_path, capsys, monkeypatch):
    import varprune.app.predict as predict_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(predict_module, "write_preview", broken)
    code = _predict(trained["model"], trained["nifti"], tmp_path / "mask.nii.gz", "--preview",
                    str(tmp_path / "preview.png"))
    assert code == 1 and "disk full" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_killed_writers_temp_file_is_removed_by_the_next_writer(tmp_path):
    final = tmp_path / "mask.nii.gz"
    from varprune.core.atomic import HOST

    dead = tmp_path / f".mask.nii.gz.pid999999999@{HOST}.abcd.tmp.nii.gz"  # no such pid
    alive = tmp_path / f".mask.nii.gz.pid{os.getpid()}@{HOST}.efgh.tmp.nii.gz"
    elsewhere = tmp_path / ".mask.nii.gz.pid999999999@othernode.ijkl.tmp.nii.gz"  # a pid of another host
    other_output = tmp_path / f".mask.nii.gz.pid7.nii.gz.pid999999999@{HOST}.mnop.tmp.nii.gz"
    for path in (dead, alive, elsewhere, other_output):
        path.write_bytes(b"")
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"mask")
    assert final.read_bytes() == b"mask" and not dead.exists()
    assert alive.exists() and elsewhere.exists() and other_output.exists()
    shutil.rmtree(tmp_path)


# ---- archives ----

def test_a_truncated_archive_fails_instead_of_converting_nothing(tiny_archive, tmp_path, capsys):
    data = tiny_archive.read_bytes()
    for share in (0.3, 0.6, 0.9, 0.99):
        cut = tmp_path / f"cut{share}.zip"
        cut.write_bytes(data[: int(len(data) * share)])
        out = tmp_path / f"out{share}"
        assert main(["convert", str(cut), str(out)]) == 1
        err = capsys.readouterr().err
        assert str(cut) in err, err
        assert not out.exists() or not any(out.rglob("*.nii.gz"))


def test_damaged_streams_bombs_and_links_are_refused_naming_case_and_member(tiny_archive, tmp_path):
    """The bomb is refused on its declared size, before anything is written (peak memory per
    process: benchmarks/robustness.py)."""
    cases = {"corrupt": (probes.corrupt_deflate, "ircad02: "),
             "bomb": (probes.bomb, "would unpack to 100 MB")}
    for name, (edit, message) in cases.items():
        archive = rewrite_inner(tiny_archive, tmp_path / f"{name}.zip", 2, "PATIENT_DICOM.zip", edit)
        with pytest.raises(ArchiveError) as err:
            convert_case(archive, "ircad02", tmp_path / name)
        assert str(err.value).startswith("ircad02: ") and message in str(err.value), str(err.value)
        assert "PATIENT_DICOM.zip" in str(err.value) and not (tmp_path / name).exists()

    archive = rewrite_inner(tiny_archive, tmp_path / "link.zip", 2, "PATIENT_DICOM.zip", probes.link_member)
    with pytest.raises(ArchiveError, match="ircad02: .*PATIENT_DICOM/sub is a symbolic link"):
        convert_case(archive, "ircad02", tmp_path / "link")


# ---- checkpoints ----

def test_a_checkpoint_declaring_a_huge_model_is_refused_before_building_it(tmp_path):
    import time

    import torch

    from tests.tiny_model import tiny_spec
    from varprune.model.network import CheckpointError, build_model, load_model, save_checkpoint

    spec = tiny_spec("setr")
    save_checkpoint(tmp_path / "ok.pt", build_model(spec), spec, {})
    huge = {**spec.to_dict(), "hidden": 8192, "heads": 8, "ffn": 65536, "layers": []}
    torch.save({"spec": huge, "state_dict": {}, "provenance": {}}, tmp_path / "huge.pt")
    assert (tmp_path / "huge.pt").stat().st_size < 4096
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"huge.pt: the weights do not match the spec \([\d,]+ values"):
        load_model(tmp_path / "huge.pt")
    assert time.perf_counter() - start < 30  # built on the meta device: nothing allocated
    for key, value in {"hidden": 10**9, "num_layers": 10**7, "heads": -1, "input_size": "big"}.items():
        bad = {"spec": {**spec.to_dict(), key: value}, "state_dict": {}, "provenance": {}}
        torch.save(bad, tmp_path / "b.pt")
        with pytest.raises(CheckpointError, match=f"invalid model spec \\({key} = "):
            load_model(tmp_path / "b.pt")
    model, loaded, _ = load_model(tmp_path / "ok.pt")
    assert loaded == spec


def test_a_3d_model_says_how_many_slices_it_needs(tmp_path, capsys):
    from tests.tiny_model import tiny_spec
    from varprune.model.network import build_model, save_checkpoint

    spec = tiny_spec(spatial_dims=3, depth=16)
    save_checkpoint(tmp_path / "m3d.pt", build_model(spec), spec,
                    {"config": {"preprocess": {"window": [-100, 400], "spacing_mm": 12.0, "input_size": 32}}})
    ct = sitk.GetImageFromArray(np.full((11, 40, 40), -1000, np.int16))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "mask.nii.gz"
    assert _predict(tmp_path / "m3d.pt", tmp_path / "ct.nii.gz", out) == 1
    assert "11 slice(s), but the model is 3D and reads slabs of 16 slices" in capsys.readouterr().err
    assert not out.exists()
