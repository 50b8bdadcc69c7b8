"""Rerun triggers: each rule's code fingerprint covers exactly the library modules its script imports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from varprune.core.codeversion import code_fingerprint, import_closure

from .workflow_helpers import REPO, scheduled, snakemake

SRC = REPO / "src" / "varprune"


def _names(script: str) -> set[str]:
    return {p.relative_to(SRC).as_posix() for p in import_closure(REPO / "scripts" / script, SRC)}


def test_the_closure_follows_imports_through_modules_and_functions():
    prune = _names("prune_cycle.py")
    # prune_cycle.py imports varprune.pruning.cycle, which reaches the MAC model through cost.py
    assert {"pruning/cycle.py", "pruning/sequence.py", "model/macs.py", "model/network.py",
            "pruning/__init__.py"} <= prune
    # load_split imports varprune.data.datasets inside the function body
    assert "data/datasets.py" in _names("train.py")
    report = _names("report.py")
    assert {"report/__init__.py", "report/build.py", "report/page.py", "study/stats.py",
            "core/layout.py"} <= report
    assert not {"model/macs.py", "engine/train.py", "model/network.py"} & report


def _package(root: Path, files: dict[str, str]) -> Path:
    src = root / "varprune"
    for name, text in {"__init__.py": "", **files}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


def test_fingerprint_changes_with_imported_code_only(tmp_path):
    src = _package(tmp_path, {
        "a.py": "def f():\n    from varprune import b\n    return b\n",
        "b.py": "from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "X = 1\n",
        "unused.py": "Y = 2\n",
    })
    script = tmp_path / "script.py"
    script.write_text("import os\nfrom varprune.a import f\n")
    assert {p.relative_to(src).as_posix() for p in import_closure(script, src)} == {
        "__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py"}
    before = code_fingerprint(script, src)
    (src / "unused.py").write_text("Y = 3\n")
    assert code_fingerprint(script, src) == before
    (src / "sub" / "c.py").write_text("X = 2\n")
    assert code_fingerprint(script, src) != before


def test_a_package_template_counts_as_the_code_of_the_package_that_holds_it(tmp_path):
    src = _package(tmp_path, {
        "page/__init__.py": "from varprune.page import render\n",
        "page/render.py": "TEMPLATE = 'templates/page.j2'\n",
        "page/templates/page.j2": "<p>{{ x }}</p>\n",
        "other/__init__.py": "",
        "other/data.txt": "unrelated\n",
    })
    script = tmp_path / "script.py"
    script.write_text("from varprune.page import render\n")
    assert "page/templates/page.j2" in {p.relative_to(src).as_posix() for p in import_closure(script, src)}
    before = code_fingerprint(script, src)
    (src / "other" / "data.txt").write_text("edited\n")
    assert code_fingerprint(script, src) == before
    (src / "page" / "templates" / "page.j2").write_text("<p>{{ x }}!</p>\n")
    assert code_fingerprint(script, src) != before


def _workflow_copy(dest: Path) -> Path:
    """The workflow files of this repository (no runs, no tests) in `dest`."""
    top_level = {".git", ".venv", "data", "results", "logs", ".snakemake", "tests", "benchmarks",
                 ".pytest_cache"}

    def skip(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or (Path(folder) == REPO and n in top_level)}

    shutil.copytree(REPO, dest, ignore=skip)
    return dest


@pytest.mark.workflow
def test_editing_library_code_reruns_exactly_the_rules_that_import_it(done_run, tmp_path):
    repo = _workflow_copy(tmp_path / "repo")
    workdir = tmp_path / "run"
    shutil.copytree(done_run, workdir, symlinks=True)
    assert scheduled(workdir, repo=repo) == {}

    for edited in ("report/figures.py", "report/templates/report.html.j2"):
        report = repo / "src" / "varprune" / edited
        original = report.read_text()
        report.write_text(original + "\n")
        assert scheduled(workdir, repo=repo) == {"report": 1}, edited  # `all` is a target rule, no job
        report.write_text(original)

    macs = repo / "src" / "varprune" / "model" / "macs.py"
    macs.write_text(macs.read_text() + "\n# edited\n")
    jobs = scheduled(workdir, repo=repo)
    assert {"prune_cycle", "oneshot", "cost", "report"} <= set(jobs)
    assert not {"train", "convert", "preprocess", "split"} & set(jobs)


@pytest.mark.workflow
def test_jobs_run_the_library_of_the_checkout_they_belong_to(tmp_path):
    """Every job imports varprune from its workflow's src/ (PYTHONPATH set by the workflow), not
    from whatever copy is installed: a `--sdm conda` env holds the dependencies only, and an edit
    in a second checkout must run there."""
    repo = _workflow_copy(tmp_path / "repo")
    marker = tmp_path / "imported-from.txt"
    # imported by every job's script, not at parse time
    runlog = repo / "src" / "varprune" / "core" / "runlog.py"
    runlog.write_text(runlog.read_text() + f"\nopen({str(marker)!r}, 'w').write(__file__)\n")
    snakemake(tmp_path / "run", "data/splits.json", repo=repo)
    assert marker.read_text() == str(runlog)
