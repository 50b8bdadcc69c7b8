"""The data half of the workflow as users run it: validation, dry runs, real runs, reruns."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import rewrite_inner
from .workflow_helpers import edited_config, merged_config, model_jobs, scheduled, snakemake

pytestmark = pytest.mark.workflow


def test_default_config_dry_run_schedules_every_data_step(tmp_path):
    jobs = scheduled(tmp_path, config=None)
    patients = merged_config(None)["synthetic"]["patients"]
    assert jobs == {"synthesize": 1, "convert": patients, "preprocess": patients, "split": 1,
                    **model_jobs(None)}


def test_tiny_run_produces_split_model_ready_data(done_run):
    splits = json.loads((done_run / "data" / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    for case in ["ircad01", "ircad02", "ircad03", "ircad04"]:
        assert (done_run / "data" / "preprocessed" / f"{case}.npz").exists()
        assert (done_run / "logs" / "data" / "convert" / f"{case}.log").exists()


def test_rerun_with_nothing_changed_does_nothing(done_run):
    assert scheduled(done_run) == {}


def _from_scratch(tmp_path) -> dict:
    """The jobs of a whole tiny run (a dry run in an empty folder): what "everything" means."""
    empty = tmp_path / "empty"
    empty.mkdir()
    return scheduled(empty)


def test_editing_the_hu_window_reruns_preprocess_not_synthesize_or_convert(done_run, tmp_path):
    config = edited_config(tmp_path, **{"preprocess.window": [-150, 250]})
    everything = _from_scratch(tmp_path)
    expected = {rule: n for rule, n in everything.items() if rule not in ("synthesize", "convert", "split")}
    assert scheduled(done_run, config=config) == expected


def test_editing_the_cohort_reruns_everything_but_the_split(done_run, tmp_path):
    """The split depends on the case names only, and a new seed keeps them."""
    config = edited_config(tmp_path, **{"synthetic.seed": 2})
    everything = _from_scratch(tmp_path)
    assert set(everything) >= {"synthesize", "convert", "preprocess", "train", "prune_cycle", "report"}
    expected = {rule: n for rule, n in everything.items() if rule != "split"}
    assert scheduled(done_run, config=config) == expected


@pytest.mark.parametrize(
    "change, key",
    [
        ({"data.source": "foo"}, "source"),  # the schema
        ({"preprocess.window": [400, -100]}, "preprocess.window"),  # varprune.workflow.checks
        ({"split.ratios": [1, 0, 0]}, "split"),  # the split, made at parse time
        ({"model.arch": "setr", "model.patch": 12}, "model.patch"),  # the dense spec
        ({"data.source": "ircadb", "data.archive": "/no/such/3Dircadb1.zip"},
         "data.archive: /no/such/3Dircadb1.zip: no such file"),  # checked on the main process
    ],
)
def test_a_wrong_config_value_stops_before_any_job_naming_the_key(tmp_path, change, key):
    """The workflow runs the schema and the checks before any job; every case of each is a unit
    test in tests/test_checks.py (milliseconds instead of a Snakemake parse each)."""
    result = snakemake(tmp_path, "-n", config=edited_config(tmp_path, **change), check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert key in text, text
    assert "Job stats" not in text and not (tmp_path / "data").exists()


def test_real_data_path_with_a_local_archive_and_a_broken_case(tiny_archive, tmp_path):
    """data.source ircadb + data.archive: the archive is linked, not downloaded; with
    --keep-going a broken case fails alone and the others convert."""
    broken = rewrite_inner(
        tiny_archive,
        tmp_path / "3Dircadb1.zip",
        2,
        "MASKS_DICOM.zip",
        lambda m: {k: v for k, v in m.items() if "/liver/" not in k},
    )
    config = edited_config(
        tmp_path, **{"data.source": "ircadb", "data.archive": str(broken), "data.patients": [1, 2, 3]}
    )
    workdir = tmp_path / "work"
    jobs = scheduled(workdir, config=config)
    assert jobs["link_archive"] == 1 and "download" not in jobs and "synthesize" not in jobs
    result = snakemake(workdir, "--keep-going", config=config, check=False)
    assert result.returncode != 0
    assert "ircad02: MASKS_DICOM.zip has no 'liver' folder" in result.stdout + result.stderr
    nifti = workdir / "data" / "nifti"
    assert (nifti / "ircad01" / "ct.nii.gz").exists() and (nifti / "ircad03" / "liver.nii.gz").exists()
    assert not (nifti / "ircad02" / "ct.nii.gz").exists()
    assert (workdir / "data" / "raw" / "3Dircadb1.zip").resolve() == broken.resolve()


def test_download_source_is_a_local_rule(tmp_path):
    config = edited_config(tmp_path, **{"data.source": "ircadb", "data.patients": [1, 2, 3]})
    jobs = scheduled(tmp_path, config=config)
    assert jobs["download"] == 1
    result = snakemake(tmp_path, "--list-rules", config=config)
    assert "download" in result.stdout
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
