"""Split cases into train, validation and test sets by patient, never by slice."""

from __future__ import annotations

import os
import re

import numpy as np

from varprune.core.atomic import write_json

MODES = ("ratios", "explicit", "kfold")


class SplitError(ValueError):
    """The split configuration is impossible; the message names the key."""


def _ratio_split(cases: list[str], ratios: list[float], seed: int) -> tuple[list, list, list]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise SplitError(f"split.ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    n = len(cases)
    n_test = max(1, round(ratios[2] / total * n)) if ratios[2] > 0 else 0
    n_val = round(ratios[1] / total * n)
    if ratios[1] > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [cases[i] for i in order]
    test = shuffled[:n_test]
    val = shuffled[n_test : n_test + n_val]
    train = shuffled[n_test + n_val :]
    return train, val, test


def _kfold_split(cases: list[str], folds: int, fold: int, seed: int, val_ratio: float):
    if folds < 2 or not 0 <= fold < folds:
        raise SplitError(f"split.fold must be in [0, split.folds) with folds >= 2, got {fold} of {folds}")
    if folds > len(cases):
        raise SplitError(f"split.folds ({folds}) is larger than the number of cases ({len(cases)})")
    order = np.random.default_rng(seed).permutation(len(cases))
    shuffled = [cases[i] for i in order]
    test = shuffled[fold::folds]
    rest = [c for c in shuffled if c not in test]
    n_val = round(val_ratio * len(rest))
    return rest[n_val:], rest[:n_val], test


def natural_key(case: str) -> list:
    """Sort key in which the numbers of a case id compare as numbers: ircad99 < ircad100."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", case)]


def make_splits(cases: list[str], cfg: dict) -> dict:
    """Build the train/val/test lists from the `split` config slice; refuse impossible splits.

    `split.test_extra: N` makes the last N cases (in natural order: ircad100 after ircad99)
    test-only and splits the others as if they were not there: a study adds test cases (a
    smaller minimum detectable difference) while train and validation, so the dense model and
    every cycle, stay the same. (Sorted as text, ircad100 to ircad109 fell between ircad10 and
    ircad11, so past 99 patients the added cases changed the training set.)"""
    mode = cfg.get("mode", "ratios")
    seed = int(cfg.get("seed", 0))
    all_cases = sorted(cases)
    extra = int(cfg.get("test_extra") or 0)
    if extra < 0 or extra >= len(all_cases):
        raise SplitError(f"split.test_extra must be at least 0 and leave cases to split: {extra} of "
                         f"{len(all_cases)} cases")
    extra_cases = sorted(sorted(all_cases, key=natural_key)[len(all_cases) - extra:]) if extra else []
    cases = [case for case in all_cases if case not in set(extra_cases)]
    if mode == "ratios":
        train, val, test = _ratio_split(cases, list(cfg.get("ratios", [0.6, 0.2, 0.2])), seed)
    elif mode == "explicit":
        train, val, test = (list(cfg.get(k) or []) for k in ("train", "val", "test"))
    elif mode == "kfold":
        train, val, test = _kfold_split(cases, int(cfg.get("folds", 5)), int(cfg.get("fold", 0)),
                                        seed, float(cfg.get("val_ratio", 0.2)))
    else:
        raise SplitError(f"split.mode must be one of {MODES}, got {mode!r}")
    sets = {"train": train, "val": val, "test": [*test, *extra_cases]}
    for name, members in sets.items():
        unknown = sorted(set(members) - set(all_cases))
        if unknown:
            raise SplitError(f"split.{name} names cases that do not exist: {unknown} (cases: {all_cases})")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        overlap = sorted(set(sets[a]) & set(sets[b]))
        if overlap:
            raise SplitError(f"split: {overlap} are in both split.{a} and split.{b}")
    if not test:
        raise SplitError("split: the test set is empty")
    if not train:
        raise SplitError("split: the training set is empty")
    extra_field = {"test_extra": extra_cases} if extra_cases else {}
    return {"mode": mode, "seed": seed, **{k: sorted(v) for k, v in sets.items()}, **extra_field}


def write_splits(cases: list[str], cfg: dict, out_json: str | os.PathLike) -> dict:
    """Compute and write `splits.json` atomically."""
    splits = make_splits(cases, cfg)
    write_json(out_json, splits)
    return splits
