"""The workflow on NIfTI data (data.source nifti): an MSD task folder and LiTS-named files written
from the tiny run's converted cases go through convert_nifti and preprocess to the same model-ready
arrays as the IRCADb path; a case without a label fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from .workflow_helpers import edited_config, scheduled, snakemake

pytestmark = pytest.mark.workflow


def _label_map(case_dir: Path) -> sitk.Image:
    """The case's masks as one MSD label map: 1 liver, 2 tumour."""
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "liver.nii.gz")))
    label = liver.astype(np.uint8)
    if (case_dir / "tumor.nii.gz").exists():
        label[sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "tumor.nii.gz"))) > 0] = 2
    image = sitk.GetImageFromArray(label)
    image.CopyInformation(sitk.ReadImage(str(case_dir / "ct.nii.gz")))
    return image


def _msd_task(done_run: Path, root: Path) -> dict[str, str]:
    """Task folder with dataset.json, imagesTr/liver_N.nii.gz, labelsTr/, macOS debris, and one
    image listed without its label file; returns liver_N -> the ircad case it was written from."""
    cases = sorted(p.name for p in (done_run / "data" / "nifti").iterdir())
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    names, training = {}, []
    for n, case in enumerate(cases):
        src = done_run / "data" / "nifti" / case
        sitk.WriteImage(sitk.ReadImage(str(src / "ct.nii.gz")), str(root / "imagesTr" / f"liver_{n}.nii.gz"))
        sitk.WriteImage(_label_map(src), str(root / "labelsTr" / f"liver_{n}.nii.gz"))
        training.append({"image": f"./imagesTr/liver_{n}.nii.gz", "label": f"./labelsTr/liver_{n}.nii.gz"})
        names[f"liver_{n}"] = case
    orphan = len(cases)
    sitk.WriteImage(sitk.ReadImage(str(done_run / "data" / "nifti" / cases[0] / "ct.nii.gz")),
                    str(root / "imagesTr" / f"liver_{orphan}.nii.gz"))
    training.append({"image": f"./imagesTr/liver_{orphan}.nii.gz",
                     "label": f"./labelsTr/liver_{orphan}.nii.gz"})
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    labels = {"0": "background", "1": "liver", "2": "cancer"}
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "labels": labels, "training": training}))
    return names


def test_an_msd_task_converts_to_the_same_model_ready_data(done_run, tmp_path):
    root = tmp_path / "Task03_Liver"
    names = _msd_task(done_run, root)
    orphan = f"liver_{len(names)}"
    config = edited_config(tmp_path, **{"data.source": "nifti", "data.layout": "msd",
                                        "data.nifti": {"root": str(root)}})
    work = tmp_path / "work"
    work.mkdir()
    targets = [f"data/preprocessed/{case}.npz" for case in [*names, orphan]]
    result = snakemake(work, *targets, "--keep-going", config=config, check=False)
    assert result.returncode != 0  # the orphan's job failed ...
    log = (work / "logs" / "data" / "convert" / f"{orphan}.log").read_text()
    assert f"no label {root / 'labelsTr' / orphan}.nii.gz" in log
    assert not (work / "data" / "nifti" / orphan).exists()
    for case, ircad in names.items():  # ... and every other case went through
        new = np.load(work / "data" / "preprocessed" / f"{case}.npz")
        old = np.load(done_run / "data" / "preprocessed" / f"{ircad}.npz")
        for key in ("image", "label", "origin", "spacing", "direction", "source_size", "source_direction"):
            np.testing.assert_array_equal(new[key], old[key], err_msg=f"{case} vs {ircad}: {key}")
        meta = json.loads((work / "data" / "nifti" / case / "meta.json").read_text())
        assert meta["case"] == case
        assert meta["liver_voxels"] == json.loads(
            (done_run / "data" / "nifti" / ircad / "meta.json").read_text())["liver_voxels"]

    # The whole run is planned on these cases: split, training, cycles, evaluation, report.
    plan = scheduled(work, config=config)
    assert plan["convert_nifti"] == 1 and plan["train"] == 1 and plan["report"] == 1


def test_lits_names_and_a_missing_root_in_the_config(done_run, tmp_path):
    """LiTS's volume-N.nii / segmentation-N.nii in one folder: the case ids are the image names;
    a root that does not exist stops the run before any job, naming the key."""
    root = tmp_path / "LiTS"
    root.mkdir()
    cases = sorted(p.name for p in (done_run / "data" / "nifti").iterdir())
    for n, case in enumerate(cases):
        src = done_run / "data" / "nifti" / case
        sitk.WriteImage(sitk.ReadImage(str(src / "ct.nii.gz")), str(root / f"volume-{n}.nii"))
        sitk.WriteImage(_label_map(src), str(root / f"segmentation-{n}.nii"))
    lits = {"root": str(root), "images": ".", "labels": ".",
            "pattern": {"image": "volume-{id}.nii", "label": "segmentation-{id}.nii"}}
    config = edited_config(tmp_path, **{"data.source": "nifti", "data.nifti": lits})
    work = tmp_path / "work"
    work.mkdir()
    snakemake(work, "data/splits.json", "data/preprocessed/volume-1.npz", config=config)
    splits = json.loads((work / "data" / "splits.json").read_text())
    found = sorted(splits["train"] + splits["val"] + splits["test"])
    assert found == [f"volume-{n}" for n in range(len(cases))]
    assert (work / "data" / "nifti" / "volume-1" / "ct.nii.gz").exists()

    missing = edited_config(tmp_path, **{"data.source": "nifti",
                                         "data.nifti": {**lits, "root": str(tmp_path / "no")}})
    result = snakemake(work, "-n", config=missing, check=False)
    assert result.returncode != 0
    assert "Invalid config: data.nifti:" in result.stdout + result.stderr
    assert str(tmp_path / "no") in result.stdout + result.stderr
