"""The conda environment of the rules installs what pyproject.toml names, and names no path that
breaks where Snakemake reads it (.snakemake/conda/, a copy of the file)."""

from __future__ import annotations

import re
import tomllib

import yaml

from .workflow_helpers import REPO

ENV = yaml.safe_load((REPO / "envs" / "varprune.yaml").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _pip_entries() -> list[str]:
    return next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict) and "pip" in d)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_every_pip_entry_is_a_requirement_not_a_path():
    for entry in _pip_entries():
        assert not entry.startswith("-"), f"{entry!r}: an option or editable path in envs/varprune.yaml"
        assert "/" not in entry and not entry.startswith("."), f"{entry!r} names a path"


def test_the_env_holds_exactly_the_project_dependencies_with_the_same_bounds():
    assert sorted(_pip_entries()) == sorted(PYPROJECT["project"]["dependencies"])
    assert {_name(e) for e in _pip_entries()} == {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    python = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=" + PYPROJECT["project"]["requires-python"].removeprefix(">=").split(",")[0]
