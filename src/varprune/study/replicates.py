"""Replicates of a run: seeds, and folds of a k-fold split, each in a folder of its own.

A replicate is one whole experiment (split, dense model, controls, cycles) at
`results/{run}/{folder}/`:
- nothing set: one replicate at `results/{run}/`;
- `replicates.seeds: [0, 1, 2]`: `seed{s}/`, the seed setting train.seed, finetune.seed and
  pruning.seed;
- `replicates.folds: all` (or a list) with `split.mode: kfold`: `fold{f}/`, or `fold{f}-seed{s}/`
  with seeds too. Every fold has its own split (`data/splits/fold{f}.json`): its test cases are
  the fold, so each patient is tested exactly once per seed.

The paired statistics pool replicates by patient: a patient's replicates are its seeds
(`pairing_label`), so across folds the cases add up and the seeds repeat them. Torch-free: the
workflow imports it at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The run wildcard: a run name, then optionally one replicate folder.
RUN_PATTERN = r"[A-Za-z0-9_.-]+(/(fold\d+-seed\d+|fold\d+|seed\d+))?"
_FOLDER = re.compile(r"fold(?P<fold>\d+)(?:-seed(?P<seed>\d+))?|seed(?P<only_seed>\d+)")
SPLITS = "data/splits.json"


@dataclass(frozen=True)
class Replicate:
    """One replicate: its seed (None: the config's seeds) and fold (None: the configured split)."""

    seed: int | None = None
    fold: int | None = None

    @property
    def folder(self) -> str:
        """The folder under results/{run}/ ("" for the single replicate of a plain run)."""
        parts = ([f"fold{self.fold}"] if self.fold is not None else []) + (
            [f"seed{self.seed}"] if self.seed is not None else [])
        return "-".join(parts)

    def run(self, name: str) -> str:
        """The `run` wildcard value of this replicate of run `name`."""
        return f"{name}/{self.folder}" if self.folder else name

    @property
    def splits(self) -> str:
        """The split file this replicate trains, validates and tests by."""
        return SPLITS if self.fold is None else f"data/splits/fold{self.fold}.json"


def fold_list(folds, n_folds: int) -> list[int] | None:
    """`replicates.folds` as fold numbers: "all" is every fold of split.folds, a list is checked
    against it, null is no folds (ValueError naming the key)."""
    if folds is None:
        return None
    if folds == "all":
        return list(range(n_folds))
    if not isinstance(folds, list) or not folds or any(not isinstance(f, int) for f in folds):
        raise ValueError(f"replicates.folds must be all or a non-empty list of fold numbers, got {folds!r}")
    wrong = [f for f in folds if not 0 <= f < n_folds]
    if wrong:
        raise ValueError(f"replicates.folds {wrong} are not folds of split.folds {n_folds} "
                         f"(0 to {n_folds - 1})")
    if len(set(folds)) != len(folds):
        raise ValueError(f"replicates.folds {folds} names a fold twice")
    return sorted(folds)


def replicates_of(replicates_cfg: dict, split_cfg: dict) -> list[Replicate]:
    """Every replicate of a run, folds outer and seeds inner (ValueError for a config that cannot
    make them: folds without split.mode kfold)."""
    seeds = replicates_cfg.get("seeds") or [None]
    folds = fold_list(replicates_cfg.get("folds"), int(split_cfg.get("folds", 5)))
    if folds is not None and split_cfg.get("mode") != "kfold":
        raise ValueError(f"replicates.folds needs split.mode kfold (it is {split_cfg.get('mode')!r}): "
                         "every fold is a replicate with its own split")
    if folds is not None and split_cfg.get("test_extra"):
        raise ValueError("replicates.folds and split.test_extra exclude each other: with folds every "
                         "patient is tested once, in its fold")
    return [Replicate(seed, fold) for fold in (folds or [None]) for seed in seeds]


def replicate_of(run: str) -> Replicate:
    """The replicate a `run` wildcard value names (its last folder, when that is a replicate's)."""
    name, _, last = run.rpartition("/")
    match = _FOLDER.fullmatch(last) if name else None
    if not match:
        return Replicate()
    seed, fold = match.group("seed") or match.group("only_seed"), match.group("fold")
    return Replicate(int(seed) if seed is not None else None, int(fold) if fold is not None else None)


def pairing_label(run_folder: str, index: int) -> int:
    """The replicate label the paired statistics use for the `index`-th replicate folder given: for
    a fold's folder its seed (0 when it has none), so that a patient tested in one fold pairs its
    seeds and the folds add patients (their test cases differ); for any other folder its index."""
    replicate = replicate_of(str(run_folder).rstrip("/"))
    if replicate.fold is None:
        return index
    return 0 if replicate.seed is None else replicate.seed
