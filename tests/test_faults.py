"""Faults while the pipeline writes (issue 28): a file-size limit hit while a job writes its
checkpoint, a job killed at a random point, a writer killed in the middle of a checkpoint. In
each case nothing half written is taken as complete, and a rerun gives the same model as the
uninterrupted run (tests/config/tiny.yaml trains deterministically with one thread)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from varprune.model.network import read_checkpoint

from .tiny_model import tiny_spec
from .workflow_helpers import CORES, LOCAL_ENV, REPO, TINY_CONFIG, snakemake

TARGET = "results/tiny/dense/model.pt"


def _fresh_copy(done_run: Path, work: Path) -> Path:
    """A run folder holding only the tiny run's data (mtimes kept), so that the dense model and
    nothing upstream of it is built again."""
    shutil.copytree(done_run / "data", work / "data", copy_function=shutil.copy2)
    return work


def _same_weights(a: Path, b: Path) -> None:
    first, second = read_checkpoint(a), read_checkpoint(b)
    assert first["spec"] == second["spec"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp*")) if folder.is_dir() else []


def _command(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores",
            str(CORES), *args, "--configfile", str(TINY_CONFIG)]  # targets before --configfile


@pytest.mark.workflow
def test_a_file_size_limit_while_writing_the_checkpoint_leaves_nothing(done_run, tmp_path):
    work = _fresh_copy(done_run, tmp_path / "run")
    size_kb = (done_run / TARGET).stat().st_size // 1024
    limited = subprocess.run(["bash", "-c", f'ulimit -f {size_kb // 2} && exec "$@"', "limited",
                              *_command(work, TARGET)], capture_output=True, text=True, env=LOCAL_ENV,
                             timeout=900)
    assert limited.returncode != 0
    log = (work / "logs" / "tiny" / "dense" / "train.log").read_text()
    assert "File too large" in log, log[-2000:]
    assert not (work / TARGET).exists() and _leftovers((work / TARGET).parent) == []
    snakemake(work, TARGET)  # the rerun, without the limit
    _same_weights(work / TARGET, done_run / TARGET)


@pytest.mark.workflow
def test_a_job_killed_at_a_random_point_is_rerun_to_the_same_model(done_run, tmp_path):
    work = _fresh_copy(done_run, tmp_path / "run")
    rng = random.Random(28)
    started = time.monotonic()
    process = subprocess.Popen(_command(work, TARGET), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=LOCAL_ENV, start_new_session=True)
    assert process.poll() is None
    log = work / "logs" / "tiny" / "dense" / "train.log"
    while not log.exists() and process.poll() is None and time.monotonic() - started < 300:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.5, 6.0))  # somewhere in the job: loading, training or writing
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # Snakemake and its job: no cleanup runs
    process.wait()
    target = work / TARGET
    snakemake(work, "--unlock")
    # Whether the kill came before, during or after the checkpoint's write, the job is not done.
    plan = snakemake(work, TARGET, "--rerun-incomplete", "-n")
    assert "train" in plan.stdout, plan.stdout
    snakemake(work, TARGET, "--rerun-incomplete")
    _same_weights(target, done_run / TARGET)
    assert _leftovers(target.parent) == []  # a killed writer's temp file is removed by the rerun


@pytest.mark.slow  # README, Tests: more than a few seconds on 2 cores
def test_a_writer_killed_in_the_middle_of_a_checkpoint_leaves_no_final_file(tmp_path):
    final = tmp_path / "model.pt"
    script = textwrap.dedent(f"""
        import torch
        from varprune.model.network import save_checkpoint, ModelSpec
        torch.nn.Module.state_dict = lambda self: {{"w": torch.zeros(200_000_000, dtype=torch.uint8)}}
        save_checkpoint({str(final)!r}, torch.nn.Module(), ModelSpec(arch="setr"), {{}})
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writer = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    temp = []
    while writer.poll() is None and time.monotonic() < deadline:
        temp = [p for p in tmp_path.glob(".model.pt.pid*") if p.stat().st_size > 0]
        if temp:
            break
        time.sleep(0.002)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert temp, "the writer finished before it could be killed mid-write"
    assert not final.exists()  # the half-written bytes are only under the temporary name
    from varprune.model.network import build_model, save_checkpoint

    spec = tiny_spec()
    save_checkpoint(final, build_model(spec), spec, {})  # the next writer
    assert read_checkpoint(final)["spec"] == spec.to_dict() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii", "mask.mha"])
def test_an_image_cut_by_the_file_size_limit_is_not_renamed_into_place(tmp_path, name):
    """ITK's NIfTI writer only prints "NWAD: wrote only ..." when a write fails: the check after
    writing is what keeps the cut file from becoming the output."""
    final = tmp_path / name
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np, SimpleITK as sitk
        from varprune.data.convert import write_image
        noise = np.random.default_rng(0).random((16, 128, 128))
        image = sitk.GetImageFromArray((noise > 0.5).astype(np.uint8))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        try:
            write_image(image, {str(final)!r})
        except OSError as err:
            print(err)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "written incompletely" in result.stdout or "File too large" in result.stdout
    assert not final.exists() and _leftovers(tmp_path) == []
