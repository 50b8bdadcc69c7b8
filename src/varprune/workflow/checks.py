"""Config checks that a JSON schema cannot express (relations between keys), run by the
workflow at parse time so that a wrong value stops the run before any job, naming the key.

Snakemake validates the config against config/schema.yaml first (types, ranges, defaults);
these checks take that validated config (a dict) and raise `ConfigError`, whose message starts
"Invalid config: {key}: ". Torch-free: parsing the workflow stays light.
"""

from __future__ import annotations

import sys
from pathlib import Path

from varprune.core.methods import PRUNING_METHODS, unknown_methods
from varprune.workflow.resources import unknown_rules

IRCADB_PATIENTS = 20


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message names the key."""


def config_error(key: str, problem: object) -> None:
    """Stop with a message that names the config key."""
    raise ConfigError(f"Invalid config: {key}: {problem}")


def dense_spec(cfg: dict):
    """The dense model's spec, with the checks every job applies (patch, head stages, sizes)."""
    from varprune.model.spec import ModelSpec

    try:
        return ModelSpec.from_config(cfg["model"], cfg["preprocess"]["input_size"])
    except ValueError as err:
        config_error("model", err)


def check_data(cfg: dict, *, archive_must_exist: bool = True) -> None:
    """The data section against itself and the synthetic cohort. `archive_must_exist`: false on
    cluster nodes, which parse the workflow again but need not see the linked archive."""
    low, high = cfg["preprocess"]["window"]
    if low >= high:
        config_error("preprocess.window", f"low ({low}) must be below high ({high})")
    syn = cfg["synthetic"]
    if syn["slices_min"] > syn["slices_max"]:
        config_error("synthetic.slices_min",
                     f"{syn['slices_min']} > synthetic.slices_max {syn['slices_max']}")
    data = cfg["data"]
    if data["source"] == "synthetic" and data["archive"]:
        config_error("data.archive", f"{data['archive']} is set but data.source is synthetic; "
                     "set data.source: ircadb to use your archive, or remove data.archive")
    if data["archive"] and archive_must_exist and not Path(data["archive"]).is_file():
        config_error("data.archive", f"{data['archive']}: no such file")
    if data["source"] == "nifti":
        for key in ("archive", "patients"):
            if data[key]:
                config_error(f"data.{key}", f"{data[key]} is set but data.source is nifti "
                             "(choose NIfTI cases with data.nifti.cases)")
        if not data["nifti"]["root"]:
            config_error("data.nifti.root", "data.source nifti needs the dataset folder")
    if data["source"] == "synthetic" and data["patients"]:
        too_big = [p for p in data["patients"] if p > syn["patients"]]
        if too_big:
            config_error("data.patients", f"{too_big} exceed synthetic.patients ({syn['patients']})")
    if data["source"] == "ircadb" and data["patients"]:
        too_big = [p for p in data["patients"] if p > IRCADB_PATIENTS]
        if too_big:
            config_error("data.patients", f"3D-IRCADb-01 has patients 1-{IRCADB_PATIENTS}, not {too_big}")


def check_pruning(cfg: dict) -> None:
    """Targets increasing and reachable by the solvers' own budget arithmetic (no torch); on the
    guarded schedule, a search that can start. Prints (stderr) which decoder groups every
    method leaves whole."""
    from varprune.pruning.budget import (
        SequenceSettings,
        check_cycle_targets,
        reachable_per_cycle,
        whole_groups_notice,
    )
    from varprune.pruning.guard import GuardSettings

    pruning = cfg["pruning"]
    spec = dense_spec(cfg)
    settings = SequenceSettings.from_config(pruning)
    if pruning["schedule"] == "guarded":
        guard = GuardSettings.from_config(pruning["guard"])
        try:
            guard.check()
        except ValueError as err:
            config_error("pruning.guard", err)
        reach = reachable_per_cycle(spec, 1, settings)[0]
        if guard.start > reach:
            config_error("pruning.guard.start",
                         f"{guard.start} is more than one cycle can remove ({reach:.4f})")
    try:
        check_cycle_targets(spec, pruning["cycle_targets"], settings)
    except ValueError as err:
        config_error("pruning", err)
    notice = whole_groups_notice(spec, settings)
    if notice:
        print(notice, file=sys.stderr)


def check_config(cfg: dict, *, archive_must_exist: bool = True) -> None:
    """Every check of a schema-validated config: data, methods, resources, the dense model, pruning."""
    check_data(cfg, archive_must_exist=archive_must_exist)
    unknown = unknown_methods(cfg["pruning"]["methods"])
    if unknown:
        config_error("pruning.methods", f"unknown {unknown}; choose from {', '.join(PRUNING_METHODS)}")
    typos = unknown_rules(cfg)
    if typos:
        config_error("resources.rules", f"no rule named {', '.join(typos)}")
    dense_spec(cfg)
    check_pruning(cfg)
    if cfg["pruning"]["schedule"] == "guarded" and cfg["export"]["quantize"]:
        config_error("export.quantize", "INT8 is built for pruning.schedule targets only (the guarded "
                     "report does not read it yet); quantize a selected model with "
                     "`varprune export --quantize int8`")
