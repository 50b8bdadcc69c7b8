"""The run's file contract: which models a run holds, which files each model has under
`results/{run}/`, and the names under which a job that reads many of them (the report, the
comparison benchmark) receives them.

The rules' output patterns (`rules/*.smk`) write these files; the workflow declares the report's
inputs from `report_files`, and the report reads them back through `RunFiles` by the same keys,
so a path is spelt out once here and never rebuilt by the code that reads it. Torch-free: the
workflow imports it at parse time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from varprune.core.methods import CONTROLS, PRUNING_METHODS

# File kind -> file name inside a model's folder.
FILE_NAMES = {
    "model": "model.pt",
    "metrics": "metrics.csv",
    "cost": "cost.json",
    "pred": "pred",  # a folder: {case}.nii.gz on each test case's CT grid
    "train_log": "train_log.csv",
    "sequence": "sequence.csv",
    "finetune_log": "finetune_log.csv",
    "oneshot": "oneshot.json",
}
ONESHOT_TABLE = "oneshot.csv"  # per run (replicate), next to the model folders
LATENCY_TABLE = "latency.csv"  # per run (replicate): every model timed side by side (varprune.engine.latency)
REFERENCES = ("dense", *CONTROLS)


@dataclass(frozen=True)
class Model:
    """One model of a run: dense, a control (cycle 0), or a method's pruning cycle."""

    method: str
    cycle: int = 0

    @property
    def folder(self) -> str:
        return self.method if self.cycle == 0 else f"{self.method}/cycle{self.cycle}"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The file kinds this model's jobs write."""
        common = ("model", "metrics", "cost", "pred")
        return (*common, "train_log") if self.cycle == 0 else (*common, "sequence", "finetune_log", "oneshot")

    def path(self, run_folder: str | os.PathLike, kind: str) -> Path:
        if kind not in self.kinds:
            raise KeyError(f"{self.folder} has no {kind!r} file (it has {', '.join(self.kinds)})")
        return Path(run_folder) / self.folder / FILE_NAMES[kind]


def run_models(methods: Iterable[str], cycles: int) -> list[Model]:
    """Every model of a run: dense and the controls first, then each method's cycles."""
    return [Model(name) for name in REFERENCES] + [Model(m, k) for m in methods for k in range(1, cycles + 1)]


def proposed_method(methods: Sequence[str]) -> str:
    """The method the report illustrates: the first proposed one in the run, else the first."""
    proposed = [m for m, spec in PRUNING_METHODS.items() if spec.role == "proposed" and m in methods]
    return (proposed or list(methods))[0]


# --- what the report reads, by input name ---------------------------------------------------

_KEY = re.compile(r"r(\d+)__")


def file_key(replicate: int, model: Model, kind: str) -> str:
    """The input name of one model file of one replicate (a valid Python identifier)."""
    return f"r{replicate}__{model.method}__c{model.cycle}__{kind}"


def oneshot_key(replicate: int) -> str:
    return f"r{replicate}__oneshot_table"


def latency_key(replicate: int) -> str:
    return f"r{replicate}__latency_table"


def latency_models(methods: Sequence[str], cycles: int, guarded: bool = False) -> list[str]:
    """The folders of the models a run's latency job times: every model of the run, or, on the
    guarded schedule, dense and each method's selected model."""
    if guarded:
        return ["dense", *(f"{method}/{SELECTED}" for method in methods)]
    return [model.folder for model in run_models(methods, cycles)]


def export_key(method: str, fmt: str) -> str:
    return f"export__{method}__{fmt}"


def report_reads(methods: Sequence[str], cycles: int, replicate: int) -> list[tuple[Model, str]]:
    """(model, kind) of every file the report reads from one replicate: metrics and cost of every
    model, the cycles' one-shot records; the illustrations (curves, sequences, widths, cases,
    deployment files) come from the first replicate only."""
    reads = []
    for model in run_models(methods, cycles):
        reads += [(model, "metrics"), (model, "cost")]
        if model.cycle:
            reads.append((model, "oneshot"))
        if replicate == 0:
            extra = ("train_log",) if model.cycle == 0 else ("finetune_log", "sequence")
            reads += [(model, kind) for kind in extra]
    if replicate == 0:
        reads += [(Model("dense"), "model"), (Model("dense"), "pred"),
                  (Model(proposed_method(methods), cycles), "pred")]
    return reads


def report_files(run_folders: Sequence[str | os.PathLike], methods: Sequence[str], cycles: int,
                 formats: Sequence[str]) -> dict[str, str]:
    """Input name -> path of every run file the report reads (`run_folders`: one per replicate).
    The exported files are those of the first replicate's last cycles."""
    files = {}
    for index, folder in enumerate(run_folders):
        for model, kind in report_reads(methods, cycles, index):
            files[file_key(index, model, kind)] = str(model.path(folder, kind))
        files[oneshot_key(index)] = str(Path(folder) / ONESHOT_TABLE)
        files[latency_key(index)] = str(Path(folder) / LATENCY_TABLE)
    for method in methods:
        for fmt in formats:
            files[export_key(method, fmt)] = str(Path(run_folders[0]) / Model(method, cycles).folder
                                                 / f"model.{fmt}")
    return files


class RunFiles:
    """The files a job was given, looked up by replicate, model and kind (KeyError when a file
    was not given: the reader cannot reach past its declared inputs)."""

    def __init__(self, files: Mapping[str, str | os.PathLike]):
        self.files = {key: Path(value) for key, value in files.items() if _KEY.match(key) or
                      key.startswith(("export__", "int8__"))}
        self.replicates = len({int(m.group(1)) for key in self.files if (m := _KEY.match(key))})
        if not self.replicates:
            raise ValueError("no run files given (expected inputs named like r0__dense__c0__metrics)")

    @classmethod
    def from_folders(cls, run_folders: Sequence[str | os.PathLike], methods: Sequence[str], cycles: int,
                     formats: Sequence[str] = ()) -> RunFiles:
        """The files of finished runs on disk (for tools outside the workflow)."""
        return cls(report_files(run_folders, methods, cycles, formats))

    def path(self, replicate: int, model: Model, kind: str) -> Path:
        return self.files[file_key(replicate, model, kind)]

    def oneshot_table(self, replicate: int) -> Path:
        return self.files[oneshot_key(replicate)]

    def run_folder(self, replicate: int) -> Path:
        """The folder of a replicate (results/{run}/ or results/{run}/{replicate folder}/)."""
        return self.files[oneshot_key(replicate)].parent

    def latency_table(self, replicate: int) -> Path:
        return self.files[latency_key(replicate)]

    def int8(self, model: Model, kind: str) -> Path | None:
        """An INT8 file of the first replicate (`INT8_FILES` kinds); None when the run has no
        INT8 folder or the model no such file (a refused model has only its decision)."""
        folder = self.files.get(INT8_KEY)
        path = int8_path(folder, model, kind) if folder is not None else None
        return path if path is not None and path.exists() else None

    def exports(self) -> list[tuple[str, str, Path]]:
        """(method, format, path) of every exported last cycle given."""
        return [(*key.split("__")[1:], path) for key, path in self.files.items()
                if key.startswith("export__")]


# --- INT8 (export.quantize: int8) ----------------------------------------------------------

# results/{run}/int8/{model folder}/: guard.json (the decision) for every deployed model, and
# for those the guard accepted model.onnx, metrics.csv, cost.json and pred/. One job writes the
# folder: which files exist depends on the guard, which a directory output expresses.
INT8 = "int8"
INT8_KEY = "int8__folder"
INT8_FILES = {"record": "guard.json", "model": "model.onnx", "metrics": "metrics.csv", "cost": "cost.json",
              "pred": "pred"}


def int8_models(methods: Sequence[str], cycles: int) -> list[Model]:
    """The models quantized: dense and every method's last cycle (the deployed ones)."""
    return [Model("dense")] + [Model(m, cycles) for m in methods]


def int8_path(int8_folder: str | os.PathLike, model: Model, kind: str) -> Path:
    return Path(int8_folder) / model.folder / INT8_FILES[kind]


# --- the guarded schedule -------------------------------------------------------------------

SELECTED = "selected"  # {method}/selected/: model.pt, selected.json, metrics.csv, cost.json


def cycle_model(run_folder: str | os.PathLike, method: str, cycle: int) -> str:
    """The checkpoint of a method's cycle; cycle 0 is the dense model."""
    return str(Model("dense" if cycle == 0 else method, cycle).path(run_folder, "model"))


def decision_file(run_folder: str | os.PathLike, method: str, cycle: int) -> str:
    """The guard's decision after a method's cycle."""
    return str(Path(run_folder) / method / "guard" / f"cycle{cycle}.json")


def reference_folder(depth: int, reference: str = "dense_long") -> str:
    """The folder (inside a run) of the model a guarded cycle of lineage depth `depth` is judged
    against: dense_long fine-tuned `depth` times, or dense (reference "dense" or depth 0)."""
    return "dense" if reference == "dense" or depth == 0 else f"dense_long/round{depth}"


def guarded_key(replicate: int, method: str, kind: str) -> str:
    """Input name of a guarded method's file: record (selected.json), metrics, cost, decisions
    (every cycle's guard decision, a list), reference_metrics (the matched reference's test metrics)."""
    return f"g{replicate}__{method}__{kind}"


def guarded_report_files(run_folders: Sequence[str | os.PathLike], methods: Sequence[str],
                         searches: Mapping[tuple[int, str], tuple[int, str]],
                         formats: Sequence[str]) -> dict[str, str | list[str]]:
    """Input name -> path(s) of what the guarded report reads. `searches[(replicate, method)]`:
    (cycles the search tried, the folder of the reference matched to the selected cycle, e.g.
    "dense_long/round3" or "dense")."""
    files: dict[str, str | list[str]] = {}
    for index, folder in enumerate(run_folders):
        dense = Model("dense")
        files[file_key(index, dense, "metrics")] = str(dense.path(folder, "metrics"))
        files[file_key(index, dense, "cost")] = str(dense.path(folder, "cost"))
        files[latency_key(index)] = str(Path(folder) / LATENCY_TABLE)
        for method in methods:
            tried, reference = searches[(index, method)]
            selected = Path(folder) / method / SELECTED
            files[guarded_key(index, method, "record")] = str(selected / "selected.json")
            files[guarded_key(index, method, "metrics")] = str(selected / FILE_NAMES["metrics"])
            files[guarded_key(index, method, "cost")] = str(selected / FILE_NAMES["cost"])
            files[guarded_key(index, method, "reference_metrics")] = str(Path(folder) / reference
                                                                         / FILE_NAMES["metrics"])
            files[guarded_key(index, method, "decisions")] = [
                decision_file(folder, method, k) for k in range(1, tried + 1)]
    for method in methods:
        for fmt in formats:
            files[export_key(method, fmt)] = str(Path(run_folders[0]) / method / SELECTED / f"model.{fmt}")
    return files


# --- what a whole run builds --------------------------------------------------------------------


def final_outputs(run: str, replicate_folders: Sequence[str], split_files: Sequence[str],
                  methods: Sequence[str], cycles: int, guarded: bool) -> list[str]:
    """What `rule all` builds: the split files, every model of every replicate (its checkpoint,
    test metrics and cost; guarded: dense and each method's selected model), the one-shot table
    (target schedule) and the run's report."""
    outputs = sorted(set(split_files))
    for folder in replicate_folders:
        if guarded:
            dense = Model("dense")
            outputs += [str(dense.path(folder, kind)) for kind in ("model", "metrics", "cost")]
            outputs += [str(Path(folder) / method / SELECTED / name) for method in methods
                        for name in ("model.pt", "selected.json", "metrics.csv", "cost.json")]
        else:
            outputs += [str(model.path(folder, kind)) for model in run_models(methods, cycles)
                        for kind in ("model", "metrics", "cost")]
            outputs.append(str(Path(folder) / ONESHOT_TABLE))
    return outputs + [f"results/{run}/report/report.html"]
