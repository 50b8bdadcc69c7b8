"""`varprune predict`, `export` and `inspect` on the tiny pipeline's models and data."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.tiny_model import ARCHS, pruned_spec, tiny_spec
from varprune.app.cli import main
from varprune.model.network import LayerSpec, build_model, save_checkpoint

from .workflow_helpers import threads_for_tests


@pytest.fixture(scope="module")
def tiny(done_run, tmp_path_factory):
    """The tiny run's dense model, its test case, and that patient as folder, zip and NIfTI."""
    root = tmp_path_factory.mktemp("deploy")
    test_case = json.loads((done_run / "data" / "splits.json").read_text())["test"][0]
    patient = int(test_case[5:])
    with zipfile.ZipFile(done_run / "data" / "raw" / "3Dircadb1.zip") as archive:
        members = [n for n in archive.namelist() if f"/3Dircadb1.{patient}/" in n]
        archive.extractall(root / "extracted", members)
    folder = next(p for p in (root / "extracted").rglob(f"3Dircadb1.{patient}") if "__MACOSX" not in p.parts)
    one_zip = root / f"3Dircadb1.{patient}.zip"
    with zipfile.ZipFile(one_zip, "w") as zf:
        for path in folder.rglob("*"):  # the patient folder as IRCADb ships it, zipped
            zf.write(path, f"3Dircadb1/{path.relative_to(folder.parent)}")
    with open(done_run / "results" / "tiny" / "dense" / "metrics.csv") as fh:
        dice = {r["case"]: float(r["dice"]) for r in csv.DictReader(fh)}[test_case]
    return {"model": done_run / "results" / "tiny" / "dense" / "model.pt", "case": test_case, "dice": dice,
            "folder": folder, "zip": one_zip, "nifti": done_run / "data" / "nifti" / test_case / "ct.nii.gz",
            "truth": done_run / "data" / "nifti" / test_case / "liver.nii.gz", "root": root,
            "run": done_run}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


@pytest.mark.workflow  # uses the tiny pipeline's model and data
@pytest.mark.parametrize("kind", ["folder", "zip", "nifti"])
def test_predict_gives_a_mask_on_the_input_grid_matching_evaluate(tiny, tmp_path, kind):
    out, preview = tmp_path / "mask.nii.gz", tmp_path / "preview.png"
    code = main(["predict", "--model", str(tiny["model"]), "--input", str(tiny[kind]), "--output", str(out),
                 "--preview", str(preview), "--threads", str(threads_for_tests() or 1)])
    assert code == 0
    mask, truth = sitk.ReadImage(str(out)), sitk.ReadImage(str(tiny["truth"]))
    assert mask.GetSize() == truth.GetSize() and mask.GetSpacing() == truth.GetSpacing()
    assert mask.GetOrigin() == truth.GetOrigin() and mask.GetDirection() == truth.GetDirection()
    score = dice(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(truth) > 0)
    # predict and evaluate share the inference code but may run with other thread counts: a few
    # voxels at the 0.5 threshold may flip, which moves a tiny case's Dice by well under 0.005.
    assert score == pytest.approx(tiny["dice"], abs=0.005)
    assert preview.stat().st_size > 1000


@pytest.mark.workflow  # uses the tiny pipeline's model and data
@pytest.mark.parametrize(("arch", "scope"), [("setr", "transformer"), ("setr", "all"), ("unetr", "decoder"),
                                           ("unetr", "embedding"), ("unetr", "all")])
def test_predict_runs_a_pruned_model_onto_the_input_grid(tiny, tmp_path, arch, scope):
    """A pruned SETR or UNETR with the tiny run's preprocessing (scope decoder: narrower decoder
    channels, embedding: a narrower residual stream, all: both): predict needs nothing but the
    checkpoint."""
    from varprune.model.network import read_checkpoint

    torch.manual_seed(0)
    spec = pruned_spec(arch)
    if scope != "transformer":
        embed = spec.hidden - 5 if scope in ("embedding", "all") else spec.hidden
        stages = [w - 1 for w in spec.dense_stages] if scope in ("decoder", "all") else spec.dense_stages
        spec = spec.with_widths(embed, stages)
    model_path = tmp_path / f"{arch}.pt"
    save_checkpoint(model_path, build_model(spec), spec, read_checkpoint(tiny["model"])["provenance"])
    out = tmp_path / "mask.nii.gz"
    code = main(["predict", "--model", str(model_path), "--input", str(tiny["nifti"]), "--output", str(out),
                 "--threads", str(threads_for_tests() or 1)])
    assert code == 0
    mask, truth = sitk.ReadImage(str(out)), sitk.ReadImage(str(tiny["truth"]))
    assert mask.GetSize() == truth.GetSize() and mask.GetSpacing() == truth.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}


def _expect_error(capsys, tmp_path, model, source, message):
    out = tmp_path / "mask.nii.gz"
    code = main(["predict", "--model", str(model), "--input", str(source), "--output", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and message in err, err
    assert not out.exists() and not list(tmp_path.glob(".mask*"))


def _series_folder(tiny, tmp_path) -> Path:
    folder = tmp_path / "series"
    with zipfile.ZipFile(tiny["folder"] / "PATIENT_DICOM.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    slices = [p for p in (tmp_path / "unzipped").rglob("image_*")]
    folder.mkdir()
    for path in slices:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.workflow  # uses the tiny pipeline's model and data
def test_bad_inputs_fail_with_their_message_and_no_output(tiny, tmp_path, capsys):
    model = tiny["model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(capsys, tmp_path, model, empty, "the folder is empty")

    series = _series_folder(tiny, tmp_path)
    (series / "image_99").write_bytes(b"\x00" * 200 + b"garbage")
    _expect_error(capsys, tmp_path, model, series, "image_99")

    (series / "image_99").unlink()
    mr = tmp_path / "mr"
    mr.mkdir()
    for path in sorted(series.iterdir()):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        image = reader.Execute()
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")  # the files have no extension to guess it from
        for key in reader.GetMetaDataKeys():
            image.SetMetaData(key, reader.GetMetaData(key))
        image.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(mr / path.name))
        writer.Execute(image)
    _expect_error(capsys, tmp_path, model, mr, "Modality (0008,0060) is MR, not CT")

    two = tmp_path / "two"
    shutil.copytree(series, two)
    other = json.loads((tiny["run"] / "data" / "splits.json").read_text())["train"][0]
    with zipfile.ZipFile(tiny["run"] / "data" / "raw" / "3Dircadb1.zip") as archive:
        wanted = f"3Dircadb1.{int(other[5:])}/PATIENT_DICOM.zip"
        inner = next(n for n in archive.namelist() if n.endswith(wanted))
        (tmp_path / "other.zip").write_bytes(archive.read(inner))
    with zipfile.ZipFile(tmp_path / "other.zip") as zf:
        for name in zf.namelist():
            if Path(name).name.startswith("image_"):
                (two / f"other_{Path(name).name}").write_bytes(zf.read(name))
    _expect_error(capsys, tmp_path, model, two, "choose one with --series (its number or UID)")

    model_3d = tmp_path / "model3d.pt"
    spec = tiny_spec(spatial_dims=3, depth=16)
    save_checkpoint(model_3d, build_model(spec), spec,
                    {"config": {"preprocess": {"window": [-100, 400], "spacing_mm": 12.0, "input_size": 32}}})
    flat = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(tiny["nifti"]))[:, :, 3], str(flat))
    _expect_error(capsys, tmp_path, model_3d, flat, "a 2D image, but the model is 3D")

    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, build_model(tiny_spec()), tiny_spec(), {})
    _expect_error(capsys, tmp_path, bare, tiny["nifti"], "does not record its preprocessing")


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip_dense_and_pruned(tmp_path, fmt, arch, capsys):
    sizes = {}
    off = tiny_spec(arch).with_layers([LayerSpec(0, 0, 0, 0.25) for _ in range(12)])  # transformer_off
    for name, spec in (("dense", tiny_spec(arch)), ("pruned", pruned_spec(arch)), ("transformer_off", off)):
        torch.manual_seed(0)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, build_model(spec), spec, {})
        out = tmp_path / f"{name}.{fmt}"
        assert main(["export", "--model", str(path), "--format", fmt, "--output", str(out)]) == 0
        assert "max difference to PyTorch" in capsys.readouterr().out
        sizes[name] = out.stat().st_size
    assert sizes["transformer_off"] < sizes["pruned"] < sizes["dense"]


@pytest.mark.parametrize("arch", ARCHS)
def test_inspect_prints_the_per_layer_spec_of_a_pruned_model(tmp_path, capsys, arch):
    spec = pruned_spec(arch)
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, build_model(spec), spec, {"kind": "pruned", "method": "variable", "cycle": 2})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["layer", "heads"]))
    table = [line.split() for line in lines[header + 1: header + 1 + len(spec.layers)]]
    expected = [[i, ls.heads, ls.head_dim, ls.inner, ls.ffn] for i, ls in enumerate(spec.layers, start=1)]
    assert [[int(v) for v in row[:5]] for row in table] == expected
    assert [float(row[5]) for row in table] == pytest.approx([layer.scale for layer in spec.layers], abs=1e-4)
    assert "method variable, cycle 2" in out and "MACs:" in out
    assert {"unetr": "UNETR 2D", "setr": "SETR-PUP 2D, input 1x1x32x32, patch 8"}[arch] in out
    assert out.count("MSA and FFN: ") == 2  # their share of the params and of the MACs


def test_the_export_tolerance_scales_with_the_outputs_magnitude():
    """1e-4 for outputs within ±1; beyond, 1e-4 times the largest output (float32 rounding grows
    with the values). A perfect export differs by 0."""
    from torch import nn

    from varprune.engine.export import TOLERANCE, max_difference

    small, large = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        small.weight.fill_(0.5), small.bias.fill_(0.0)
        large.weight.fill_(40.0), large.bias.fill_(0.0)
    for module, low, high in ((small, TOLERANCE, TOLERANCE), (large, 30 * TOLERANCE, 40 * TOLERANCE)):
        def exact(batch, module=module):
            with torch.no_grad():
                return module(torch.from_numpy(batch)).numpy()

        difference, allowed = max_difference(module, exact, (1, 1, 8, 8))
        assert difference == 0.0 and low <= allowed <= high


@pytest.mark.workflow  # uses the tiny pipeline's model and data
def test_predict_with_an_export_equals_the_checkpoint_in_every_orientation(tiny, tmp_path, capsys):
    """The runtime follows the file: the ONNX (onnxruntime) and TorchScript exports give the
    checkpoint's mask on the test case stored in every orientation, with the same checks."""
    from tests import probes

    exported = {fmt: tmp_path / f"model.{fmt}" for fmt in ("onnx", "torchscript")}
    for fmt, path in exported.items():
        assert main(["export", "--model", str(tiny["model"]), "--format", fmt, "--output", str(path)]) == 0
    ct = sitk.ReadImage(str(tiny["nifti"]))
    threads = str(threads_for_tests() or 1)
    assert len(probes.FLIPS) >= 5
    for code, flips in probes.FLIPS.items():
        source = tmp_path / f"{code}.nii.gz"
        sitk.WriteImage(sitk.Flip(ct, flips), str(source))
        masks = {}
        for name, model in (("pt", tiny["model"]), *exported.items()):
            out = tmp_path / f"{code}-{name}.nii.gz"
            assert main(["predict", "--model", str(model), "--input", str(source), "--output", str(out),
                         "--threads", threads]) == 0
            masks[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
        assert masks["pt"].sum() > 100, code
        for name in exported:
            assert dice(masks[name], masks["pt"]) >= 0.999, (code, name)
    capsys.readouterr()
    out = tmp_path / "refused.nii.gz"
    assert main(["predict", "--model", str(exported["onnx"]), "--input", str(tiny["nifti"]), "--output",
                 str(out), "--precision", "bf16"]) == 1
    assert "runs in the precision it was written in" in capsys.readouterr().err and not out.exists()


@pytest.mark.workflow  # uses the tiny pipeline's model and data
def test_evaluate_runs_an_onnx_export_like_its_checkpoint(tiny, tmp_path):
    from varprune.engine.evaluate import evaluate_checkpoint

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--model", str(tiny["model"]), "--format", "onnx", "--output",
                 str(onnx_path)]) == 0
    run = tiny["run"]
    cases = json.loads((run / "data" / "splits.json").read_text())["test"]
    preprocessed = [run / "data" / "preprocessed" / f"{c}.npz" for c in cases]
    truth = [run / "data" / "nifti" / c / "liver.nii.gz" for c in cases]
    rows = {}
    for name, model in (("pt", tiny["model"]), ("onnx", onnx_path)):
        rows[name] = evaluate_checkpoint(model, preprocessed, truth, tmp_path / name / "metrics.csv",
                                         tmp_path / name / "pred", threads=threads_for_tests() or 1)
    for a, b in zip(rows["pt"], rows["onnx"], strict=True):
        assert a["case"] == b["case"] and b["dice"] == pytest.approx(a["dice"], abs=1e-3)
        masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n / "pred" / f"{a['case']}.nii.gz")))
                 > 0 for n in ("pt", "onnx")]
        assert dice(*masks) >= 0.999


def test_an_export_without_varprune_metadata_is_refused_with_the_fix(tmp_path, capsys):
    from varprune.engine.export import onnx_bytes

    spec = tiny_spec("setr")
    bare = tmp_path / "old.onnx"
    bare.write_bytes(onnx_bytes(build_model(spec).eval(), torch.zeros(spec.input_shape(1))))
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--model", str(bare), "--input", str(tmp_path / "ct.nii.gz"),
                 "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "carries no varprune metadata" in err and "varprune export" in err and not out.exists()
    assert main(["predict", "--model", str(tmp_path / "model.h5"), "--input", str(tmp_path / "ct.nii.gz"),
                 "--output", str(out)]) == 1
    assert "unknown model file type '.h5'" in capsys.readouterr().err
