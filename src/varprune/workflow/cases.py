"""Which cases a run has and how each replicate splits them, decided at parse time so that an
impossible split stops the run before any job (ConfigError naming the key). Torch-free."""

from __future__ import annotations

from varprune.data.splits import SplitError, make_splits
from varprune.study.replicates import Replicate, replicates_of
from varprune.workflow.checks import IRCADB_PATIENTS, config_error


def patient_numbers(cfg: dict) -> list[int]:
    """Patient numbers of an archive source: the configured list, else every patient."""
    data = cfg["data"]
    if data["patients"]:
        return sorted(data["patients"])
    if data["source"] == "synthetic":
        return list(range(1, cfg["synthetic"]["patients"] + 1))
    return list(range(1, IRCADB_PATIENTS + 1))


def nifti_case_files(cfg: dict) -> dict[str, tuple]:
    """case id -> (image, label) of a NIfTI source (file names only: nothing is read)."""
    from varprune.data.nifti import NiftiError, NiftiSource, discover_cases

    try:
        return discover_cases(NiftiSource.from_config(cfg["data"]))
    except (NiftiError, ValueError) as err:
        config_error("data.nifti", err)


def case_ids(cfg: dict, nifti_cases: dict) -> list[str]:
    """The run's case ids: the NIfTI cases, else ircadNN for every patient number."""
    return list(nifti_cases) or [f"ircad{p:02d}" for p in patient_numbers(cfg)]


def checked_replicates(cfg: dict) -> list[Replicate]:
    """The replicates (seeds, folds) of the config."""
    try:
        return replicates_of(cfg["replicates"], cfg["split"])
    except ValueError as err:
        config_error("replicates.folds", err)


def fold_split_config(cfg: dict, fold: int | None) -> dict:
    """The split slice of one fold (None: the configured split)."""
    return cfg["split"] if fold is None else {**cfg["split"], "fold": fold}


def checked_splits(cases: list[str], cfg: dict, folds: list[int]) -> dict[int | None, dict]:
    """fold (None without folds) -> its split of `cases`; every test split must hold a case."""
    try:
        splits = {fold: make_splits(cases, fold_split_config(cfg, fold)) for fold in (folds or [None])}
    except SplitError as err:
        config_error("split", str(err))
    for fold, split in splits.items():
        if not split["test"]:
            where = "" if fold is None else f" of fold {fold}"
            config_error("split", f"the test split{where} is empty: every model is evaluated on it")
    return splits
