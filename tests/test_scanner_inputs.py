"""What scanners and converters really write (issue 28): tilted gantries, mixed reconstructions,
several series in a folder, contradictory or invalid NIfTI geometry, files cut short, huge
declared sizes, implausible anatomy scale, and ITK's multi-line errors. Each input gets the
right answer, a refusal naming the file and the reason, or a warning, and nothing is written on
refusal. The inputs are built by tests/probes.py, which benchmarks/robustness.py shares."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from varprune.app.cli import main
from varprune.app.predict import InputError, findings_path, read_ct
from varprune.data import plausibility
from varprune.data.archive import ArchiveError
from varprune.data.convert import convert_case, read_case
from varprune.data.image_file import ImageFileError, nifti_geometry, read_image
from varprune.data.itkerror import itk_reason
from varprune.data.nifti import NiftiError, convert_nifti_case
from varprune.data.phantom import make_phantom
from varprune.data.synthetic import SyntheticSpec

from . import probes
from .workflow_helpers import threads_for_tests

PATIENT, CASE = 1, "ircad01"


def _centroid(image: sitk.Image) -> np.ndarray:
    voxels = np.argwhere(sitk.GetArrayViewFromImage(image) > 0)[:, ::-1].mean(axis=0)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(voxels.tolist()))


@pytest.fixture(scope="module")
def straight(tiny_archive):
    """The untilted case as the archive holds it."""
    return read_case(tiny_archive, CASE)


# ---- DICOM: gantry tilt ----

@pytest.mark.parametrize("degrees", [15.0, 30.0])
def test_a_tilted_series_is_resampled_onto_its_true_positions(tiny_archive, straight, tmp_path, caplog,
                                                             degrees):
    archive = probes.archive_with(tiny_archive, tmp_path / "tilted.zip", PATIENT, probes.tilted(degrees),
                                  masks_too=True)
    with caplog.at_level(logging.WARNING):
        tilted = read_case(archive, CASE)
    assert f"tilted {degrees:.1f} degrees" in caplog.text and tilted.meta["gantry_tilt_deg"] == degrees
    angle = np.radians(degrees)
    # The true voxel is dx * dy * gap * cos(tilt): ITK's stack would be 1/cos(tilt) too large.
    assert tilted.meta["liver_volume_ml"] == pytest.approx(straight.meta["liver_volume_ml"] * np.cos(angle),
                                                           rel=0.01)
    assert tilted.ct.GetSpacing()[2] == pytest.approx(straight.ct.GetSpacing()[2] * np.cos(angle), rel=1e-4)
    # Where the liver really is: slice k of the series lies at its own ImagePositionPatient.
    i, j, k = np.argwhere(sitk.GetArrayViewFromImage(straight.liver) > 0)[:, ::-1].mean(axis=0)
    dx, dy, dz = straight.ct.GetSpacing()
    true = (np.asarray(straight.ct.GetOrigin()) + i * dx * np.array([1.0, 0, 0])
            + j * dy * np.array([0, np.cos(angle), np.sin(angle)]) + k * dz * np.array([0, 0, 1.0]))
    assert np.abs(_centroid(tilted.liver) - true).max() < 0.25 * dx
    direction = np.asarray(tilted.ct.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)  # an orthogonal grid
    assert sitk.GetArrayViewFromImage(tilted.ct).min() >= -1024  # outside the scan: air


def test_predict_reads_a_tilted_folder_on_its_true_grid(tiny_archive, tmp_path):
    archive = probes.archive_with(tiny_archive, tmp_path / "tilted.zip", PATIENT, probes.tilted(15.0))
    folder = _ct_folder(archive, tmp_path / "series")
    ct = read_ct(folder)
    assert ct.GetSpacing()[2] == pytest.approx(_ct_folder_gap(folder) * np.cos(np.radians(15.0)), rel=1e-4)


# ---- DICOM: one UID, several reconstructions; several series in a folder ----

@pytest.mark.parametrize("edit, message", [
    (probes.mixed_reconstructions, "differ in PixelSpacing (0028,0030) or matrix size: 6 slice(s)"),
    (probes.shifted_origins, "pixels off the line through the other slices' origins"),
])
def test_two_reconstructions_under_one_uid_are_refused(tiny_archive, tmp_path, edit, message):
    archive = probes.archive_with(tiny_archive, tmp_path / "mixed.zip", PATIENT, edit)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert_case(archive, CASE, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="Two reconstructions|not one reconstruction"):
        read_ct(_ct_folder(archive, tmp_path / "series"))


def test_several_series_are_listed_and_chosen_by_number(tiny_archive, tmp_path):
    folder = _ct_folder(tiny_archive, tmp_path / "two")
    second = _ct_folder(tiny_archive, tmp_path / "other", patient=2)
    for path in second.iterdir():  # patient 2's series (its own UID) beside patient 1's
        shutil.move(path, folder / f"p2-{path.name}")
    with pytest.raises(InputError) as refused:
        read_ct(folder)
    listing = str(refused.value)
    assert "holds 2 series; choose one with --series (its number or UID)" in listing
    assert "  1: " in listing and "  2: " in listing and "'abdomen venous phase'" in listing
    assert "slice(s)" in listing
    volumes = [sitk.GetArrayFromImage(read_ct(folder, series=str(n))) for n in (1, 2)]
    assert volumes[0].shape != volumes[1].shape or not np.array_equal(*volumes)  # two patients' series
    with pytest.raises(InputError, match="no series 3; it holds:"):
        read_ct(folder, series="3")


def _ct_folder(archive: Path, out: Path, patient: int = PATIENT) -> Path:
    return probes.ct_folder(archive, out, patient)


def _ct_folder_gap(folder: Path) -> float:
    import pydicom

    z = sorted(float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in folder.iterdir())
    return z[1] - z[0]


# ---- NIfTI: geometry, cut files, declared size ----

@pytest.fixture
def nifti_ct(straight, tmp_path) -> Path:
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(straight.ct, str(path))
    return path


def test_disagreeing_sform_and_qform_are_refused_unless_one_is_chosen(nifti_ct, straight, tmp_path):
    path = probes.forms_disagree(nifti_ct, tmp_path / "forms.nii.gz")
    with pytest.raises(ImageFileError) as refused:
        read_image(path)
    message = str(refused.value)
    assert str(path) in message and "sform and qform disagree" in message
    assert "sform voxels" in message and "qform voxels" in message and "--nifti-geometry" in message
    as_stored = read_image(path, nifti_choice="qform")
    assert as_stored.GetDirection() == pytest.approx(straight.ct.GetDirection())
    assert as_stored.GetOrigin() == pytest.approx(straight.ct.GetOrigin(), abs=1e-3)
    mirrored = read_image(path, nifti_choice="sform")
    assert mirrored.GetDirection()[0] == pytest.approx(-1.0)
    # convert_nifti: the same refusal, and the config's choice
    label = tmp_path / "label.nii.gz"
    sitk.WriteImage(straight.liver, str(label))
    with pytest.raises(NiftiError, match="sform and qform disagree"):
        convert_nifti_case(path, label, "case1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, kind", [(-0.8, "negative"), (0.0, "zero")])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_zero_and_negative_pixdim_are_refused(nifti_ct, tmp_path, value, kind, suffix):
    path = probes.with_pixdim(nifti_ct, tmp_path / f"pixdim{suffix}", value)
    with pytest.raises(ImageFileError, match=rf"{path}: pixdim\[1\] is {value:g} \({kind}\)"):
        read_image(path)


def test_a_sheared_form_is_refused_with_the_reason(nifti_ct, tmp_path):
    header, data = probes.nifti_bytes(nifti_ct)
    affine = header.get_qform()
    affine[0, 1] = 0.5  # x moves with y: not a rotation
    header.set_qform(None, code=0)
    header.set_sform(affine, code=1)
    path = probes.write_nifti(tmp_path / "sheared.nii", header, data)
    with pytest.raises(ImageFileError, match="its sform is not a rotation times voxel sizes"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_file_cut_short_is_refused_naming_what_is_missing(nifti_ct, tmp_path, suffix):
    full = probes.write_nifti(tmp_path / f"full{suffix}", *probes.nifti_bytes(nifti_ct))
    assert read_image(full).GetSize() == sitk.ReadImage(str(nifti_ct)).GetSize()
    path = probes.cut(full, tmp_path / f"cut{suffix}")
    with pytest.raises(ImageFileError, match=rf"{path}: the file is cut short: the header declares [\d,]+ "
                                             r"bytes, the file holds [\d,]+ \([\d,]+ missing, (29|30)\.\d %"):
        read_image(path)


def test_a_gzip_cut_after_its_voxels_is_refused(nifti_ct, tmp_path):
    raw = nifti_ct.read_bytes()
    path = tmp_path / "tail.nii.gz"
    path.write_bytes(raw[:-6])  # the voxels are all there, the checksum and length are not
    with pytest.raises(ImageFileError, match="stops without its end marker"):
        read_image(path)


def test_a_huge_declared_size_is_refused_before_reading(tmp_path):
    path = probes.huge_header(tmp_path / "huge.nii.gz")
    assert path.stat().st_size < 10_000
    with pytest.raises(ImageFileError, match=r"declares 900,000,000,000 voxels \(size 30000 x 30000 x 1000"):
        read_image(path)
    mha = tmp_path / "huge.mha"  # other formats: the size from ITK's header reading
    mha.write_text("ObjectType = Image\nNDims = 3\nDimSize = 30000 30000 1000\nElementType = MET_SHORT\n"
                   "ElementDataFile = LOCAL\n")
    with pytest.raises(ImageFileError, match="declares 900,000,000,000 voxels"):
        read_image(mha)


def test_a_normal_nifti_passes_every_header_check(nifti_ct):
    assert nifti_geometry(nifti_ct, str(nifti_ct)) is None  # nothing to correct: ITK's reading stands


# ---- reasons, not ITK source locations ----

def _itk_error(action) -> RuntimeError:
    try:
        action()
    except RuntimeError as err:
        return err
    raise AssertionError("ITK did not raise")


def test_itk_reasons_replace_source_locations(nifti_ct, tmp_path):
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("not an image")
    huge = probes.huge_header(tmp_path / "huge.nii.gz", shape=(20000, 20000, 2000))
    header, data = probes.nifti_bytes(nifti_ct)
    affine = header.get_qform()
    affine[0, 1] = 0.5
    header.set_qform(None, code=0)
    header.set_sform(affine, code=1)
    sheared = probes.write_nifti(tmp_path / "sheared.nii", header, data)
    errors = {  # ITK's own exceptions, as SimpleITK raises them (multi-line, location first)
        "Unable to determine ImageIO reader": _itk_error(lambda: sitk.ReadImage(str(unknown))),
        "ITK only supports orthonormal direction cosines": _itk_error(lambda: sitk.ReadImage(str(sheared))),
        "Failed to allocate memory for image": _itk_error(lambda: sitk.ReadImage(str(huge))),
    }
    for reason, err in errors.items():
        first = str(err).splitlines()[0]
        assert "\n" in str(err) and (".cxx:" in first or ".hxx:" in first), str(err)
        shown = itk_reason(err)
        assert reason in shown, shown
        assert ".cxx" not in shown and ".hxx" not in shown and "sitk::ERROR" not in shown
    with pytest.raises(ImageFileError, match=r"notes.xyz: cannot read \(Unable to determine ImageIO reader"):
        read_image(unknown)


# ---- plausibility ----

@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_the_default_synthetic_cases_pass_every_plausibility_check():
    spec = SyntheticSpec()
    for patient in range(1, 5):
        phantom = make_phantom(spec.seed, patient, spec.size, (spec.slices_min, spec.slices_max))
        ct = sitk.GetImageFromArray(phantom.hu.astype(np.int16))
        ct.SetSpacing(phantom.spacing)
        liver_ml = float(phantom.masks["liver"].sum()) * float(np.prod(phantom.spacing)) / 1000
        assert plausibility.check_ct(ct) + plausibility.check_liver(liver_ml) == [], patient


def test_a_child_sized_body_and_a_tiny_liver_warn():
    spec = SyntheticSpec()
    phantom = make_phantom(spec.seed, 1, spec.size, (spec.slices_min, spec.slices_max))
    ct = sitk.GetImageFromArray(phantom.hu.astype(np.int16))
    sx, sy, sz = phantom.spacing
    ct.SetSpacing((sx * 0.55, sy * 0.55, sz))
    findings = plausibility.check_ct(ct) + plausibility.check_liver(8.0)
    assert [f.check for f in findings] == ["body_width", "liver_volume"]
    assert "outside adult sizes" in findings[0].message and findings[0].value < 200
    weird = sitk.Image(ct)
    weird.SetSpacing((sx, sy, 25.0))
    assert [f.check for f in plausibility.check_ct(weird)] == ["slice_spacing"]


def test_the_sidecar_sits_next_to_the_mask():
    assert findings_path("out/liver.nii.gz") == Path("out/liver.json")
    assert findings_path("liver.mha") == Path("liver.json")


# ---- through predict, with the tiny run's model ----

@pytest.fixture(scope="module")
def model_and_case(done_run):
    case = json.loads((done_run / "data" / "splits.json").read_text())["test"][0]
    model = done_run / "results" / "tiny" / "dense" / "model.pt"
    return model, done_run / "data" / "nifti" / case / "ct.nii.gz"


def _predict(model: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--model", str(model), "--input", str(source), "--output", str(out),
                 "--threads", str(threads_for_tests() or 1), *extra])


@pytest.mark.workflow
def test_predict_refuses_bad_geometry_and_cut_files_writing_nothing(model_and_case, tmp_path, capsys):
    model, ct = model_and_case
    cases = {
        "forms": (probes.forms_disagree(ct, tmp_path / "forms.nii.gz"), "sform and qform disagree"),
        "pixdim": (probes.with_pixdim(ct, tmp_path / "pixdim.nii", -1.0), "pixdim[1] is -1 (negative)"),
        "cut": (probes.cut(ct, tmp_path / "cut.nii.gz"), "the file is cut short"),
        "huge": (probes.huge_header(tmp_path / "huge.nii.gz"), "declares 900,000,000,000 voxels"),
    }
    for name, (source, message) in cases.items():
        out = tmp_path / f"{name}-mask.nii.gz"
        assert _predict(model, source, out) == 1, name
        err = capsys.readouterr().err
        assert message in err and str(source) in err, err
        assert not out.exists() and not findings_path(out).exists()
    reference, chosen = tmp_path / "reference.nii.gz", tmp_path / "qform.nii.gz"
    assert _predict(model, ct, reference) == 0
    assert _predict(model, cases["forms"][0], chosen, "--nifti-geometry", "qform") == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(chosen))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(reference))))


@pytest.mark.workflow
def test_predict_warns_about_a_child_sized_body_in_stderr_and_the_sidecar(model_and_case, tmp_path, capsys,
                                                                          caplog):
    model, ct = model_and_case
    normal, child = tmp_path / "normal.nii.gz", tmp_path / "child.nii.gz"
    assert _predict(model, ct, normal) == 0
    before = {w["check"] for w in json.loads(findings_path(normal).read_text())["warnings"]}
    assert "body_width" not in before  # the tiny case's coarse pixels warn; its body is adult-sized
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):  # the CLI's log goes to stderr
        assert _predict(model, probes.scaled_in_plane(ct, tmp_path / "scaled.nii.gz"), child) == 0
    captured = capsys.readouterr()
    assert "the body's width is" in caplog.text and "outside adult sizes" in caplog.text
    sidecar = json.loads(findings_path(child).read_text())
    assert "body_width" in {w["check"] for w in sidecar["warnings"]}
    assert sidecar["output"] == str(child) and sidecar["liver_ml"] >= 0
    assert "warning(s)" in captured.out
