"""Shared fixtures: a tiny synthetic archive in the IRCADb layout, and helpers to break it."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from varprune.data.synthetic import SyntheticSpec, write_synthetic_archive

from .workflow_helpers import threads_for_tests

REPO = Path(__file__).resolve().parents[1]
TINY = SyntheticSpec(patients=3, size=64, slices_min=11, slices_max=13, seed=1)


def pytest_configure(config):
    """VARPRUNE_TEST_THREADS=N: torch in this process and in every subprocess uses N threads."""
    threads = threads_for_tests()
    if threads is not None:
        import torch

        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
        torch.set_num_threads(threads)


def pytest_report_header(config):
    import torch

    source = "VARPRUNE_TEST_THREADS" if threads_for_tests() is not None else "default"
    return f"torch threads: {torch.get_num_threads()} ({source})"


SLOWER_TIERS = ("workflow", "slurm", "slow")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tiers: a test with none of the slower tiers' markers is also `quick`, so that
    `pytest -m quick` (README's quick start) runs the unit tests plus the end-to-end tests marked
    quick by hand, and plain `pytest` runs every tier."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in SLOWER_TIERS):
            item.add_marker(pytest.mark.quick)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """Three 64x64 patients with 11-13 slices each (so image_10 ordering is exercised)."""
    path = tmp_path_factory.mktemp("archive") / "3Dircadb1.zip"
    write_synthetic_archive(path, TINY)
    return path


@pytest.fixture(scope="session")
def done_run(tmp_path_factory) -> Path:
    """The tiny pipeline (tests/config/tiny.yaml) run to the end once; tests dry-run against it."""
    from .workflow_helpers import snakemake

    workdir = tmp_path_factory.mktemp("tiny-run")
    snakemake(workdir)
    return workdir


Members = dict[str, bytes]


def rewrite_inner(
    archive: Path, out: Path, patient: int, inner: str, change: Callable[[Members], Members | bytes]
) -> Path:
    """Copy `archive` to `out`, passing one inner zip's members (name -> bytes) through `change`.

    `change` returns new members (re-zipped) or raw bytes that replace the inner zip as is.
    """
    target = f"3Dircadb1/3Dircadb1.{patient}/{inner}"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == target:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    members = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
                changed = change(members)
                if isinstance(changed, bytes):
                    data = changed
                else:
                    buffer = io.BytesIO()
                    with zipfile.ZipFile(buffer, "w") as zf:
                        for name, content in changed.items():
                            zf.writestr(name, content)
                    data = buffer.getvalue()
            dst.writestr(info, data)
    return out
