"""The rules' input and params functions over one parsed config.

They lived in rules/common.smk, where they could only be tried through `snakemake -n`; here
they are plain methods (tests/test_workflow_inputs.py calls them with a namespace for the
wildcards). Snakemake calls a bound method like any function; a guarded search's decisions are
read through `read_decision`, which in the workflow asks the `guard` checkpoint (an unfinished
decision raises Snakemake's IncompleteCheckpointException there, which schedules it first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from varprune.core import layout
from varprune.study.replicates import Replicate, replicate_of
from varprune.workflow import params as policy

# Keys of export that change an INT8 model or its verdict (the INT8 job's params).
QUANTIZE_KEYS = ("quantize_mode", "quantize_ops", "calibration_slices", "max_dice_drop")


@dataclass
class RuleInputs:
    """Input and params functions of the rules.

    `splits` maps a fold (None without folds) to its train/val/test case lists;
    `read_decision(run, method, k)` returns the path of the guard's decision file for cycle k.
    """

    config: dict
    splits: dict
    replicates: list[Replicate]
    read_decision: Callable[[str, str, int], str]

    @property
    def methods(self) -> list[str]:
        return self.config["pruning"]["methods"]

    @property
    def targets(self) -> list[float]:
        return self.config["pruning"]["cycle_targets"]

    @property
    def guarded(self) -> bool:
        return self.config["pruning"]["schedule"] == "guarded"

    # Replicates and their cases.

    def split_of(self, run: str) -> dict:
        """The split (train/val/test case lists) of a replicate's `run` wildcard value."""
        return self.splits[replicate_of(run).fold]

    def replicate_runs(self, run: str) -> list[str]:
        """The result folders (as `run` wildcard values) of every replicate of `run`."""
        return [replicate.run(run) for replicate in self.replicates]

    @staticmethod
    def split_file(wildcards) -> str:
        """The split file of the replicate (provenance of the models trained by it)."""
        return replicate_of(wildcards.run).splits

    def cases(self, subset: str, pattern: str = "data/preprocessed/{case}.npz") -> Callable:
        """`pattern` for every case of the replicate's `subset` (train, val, test); the rules
        that read only some splits name only those cases as inputs."""
        return lambda wildcards: [pattern.format(case=case) for case in self.split_of(wildcards.run)[subset]]

    def seeded(self, section: str) -> Callable:
        """Params: the config slice `section` as its jobs see it, with the replicate's seed
        (varprune.workflow.params: what counts as a param)."""
        return lambda wildcards: policy.seeded_slice(self.config[section], replicate_of(wildcards.run).seed)

    @staticmethod
    def state_dir(model: str) -> Callable:
        """Params: the resume-state folder of a model ("dense", "{method}/cycle{k}"), undeclared
        so that Snakemake keeps it when a job fails."""
        return lambda wildcards: f"results/{wildcards.run}/.state/{model.format(**dict(wildcards.items()))}"

    def distill_teacher(self, wildcards) -> str | list:
        """The dense checkpoint when fine-tuning distils from it (finetune.distill with teacher
        dense), else nothing (teacher parent is the job's own starting checkpoint)."""
        distill = self.config["finetune"]["distill"]
        if distill["weight"] and distill["teacher"] == "dense":
            return f"results/{wildcards.run}/dense/model.pt"
        return []

    # Cycles, fixed or guarded (pruning.schedule).

    def guard_search(self, run: str, method: str):
        """A method's guarded search (varprune.pruning.guard_search)."""
        from varprune.pruning.guard import GuardSettings
        from varprune.pruning.guard_search import GuardSearch

        guard = self.config["pruning"]["guard"]
        return GuardSearch(run_folder=f"results/{run}", method=method,
                           settings=GuardSettings.from_config(guard),
                           read=lambda k: self.read_decision(run, method, k), reference=guard["reference"])

    def previous_model(self, wildcards) -> str:
        """Cycle k starts from cycle k-1 of the same method, cycle 1 from dense; guarded, from
        the cycle the guard's last decision names. The decisions are read through the checkpoint
        but not declared as inputs: a decision rewritten with the same plan (say after raising
        max_cycles) must not redo the cycles; a changed plan changes the parent or the target (a
        param), which does."""
        k = int(wildcards.k)
        if self.guarded:
            return self.guard_search(wildcards.run, wildcards.method).parent_model(k)
        return layout.cycle_model(f"results/{wildcards.run}", wildcards.method, k - 1)

    def cycle_pruning(self, wildcards) -> dict:
        """Params: the pruning slice a cycle needs, with only its own target and its
        predecessor's, so appending a target leaves earlier cycles untouched."""
        k = int(wildcards.k)
        if self.guarded:
            targets = self.guard_search(wildcards.run, wildcards.method).targets(k)
        else:
            targets = policy.scheduled_targets(self.targets, k)
        return policy.cycle_slice(self.seeded("pruning")(wildcards), *targets)

    def oneshot_pruning(self, wildcards) -> dict:
        """Params: the pruning slice of the one-shot curves (no cycle targets)."""
        return policy.oneshot_slice(self.seeded("pruning")(wildcards))

    def earlier_decisions(self, wildcards) -> list[str]:
        """The guard's decisions before cycle k."""
        return self.guard_search(wildcards.run, wildcards.method).earlier_decision_files(int(wildcards.k))

    def guard_reference(self, wildcards) -> str:
        """The model cycle k is judged against: dense_long fine-tuned as often as the cycle's
        lineage (round = its depth), or dense (pruning.guard.reference)."""
        return self.guard_search(wildcards.run, wildcards.method).reference_model(int(wildcards.k))

    def guard_fallback(self, wildcards) -> str:
        """Where the search goes back to if cycle k fails (the last cycle within tolerance
        before it, or dense)."""
        return self.guard_search(wildcards.run, wildcards.method).fallback_model(int(wildcards.k))

    @staticmethod
    def reference_parent(wildcards) -> str:
        """Reference round k starts from round k-1, round 1 from dense."""
        return f"results/{wildcards.run}/{layout.reference_folder(int(wildcards.k) - 1)}/model.pt"

    def selection_inputs(self, wildcards) -> dict:
        """Inputs of `select`: every decision of the search and the selected checkpoint."""
        return self.guard_search(wildcards.run, wildcards.method).selection_inputs()

    # What the run-level jobs read.

    def latency_models(self) -> list[str]:
        """The folders of the models the run's latency job times."""
        return layout.latency_models(self.methods, len(self.targets), self.guarded)

    def latency_inputs(self, wildcards) -> list[str]:
        """The checkpoint of every model the run's latency job times."""
        return [f"results/{wildcards.run}/{folder}/model.pt" for folder in self.latency_models()]

    def int8_models(self) -> list[str]:
        """The folders of the models the INT8 job quantizes."""
        return [model.folder for model in layout.int8_models(self.methods, len(self.targets))]

    def int8_sources(self, name: str) -> Callable:
        """`name` (model.pt or model.onnx) of every deployed model, for the INT8 job."""
        return lambda wildcards: [f"results/{wildcards.run}/{folder}/{name}" for folder in self.int8_models()]

    def quantize_settings(self) -> dict:
        """Params of the INT8 job: the export keys that change an INT8 model or its verdict."""
        return policy.canonical({key: self.config["export"][key] for key in QUANTIZE_KEYS})

    def int8_inputs(self, run: str) -> dict:
        """With export.quantize int8: the first replicate's INT8 folder, for the report."""
        if self.config["export"]["quantize"] != "int8":
            return {}
        return {layout.INT8_KEY: f"results/{self.replicate_runs(run)[0]}/{layout.INT8}"}

    def report_inputs(self, wildcards) -> dict[str, Any]:
        """Every file the report reads (varprune.core.layout.report_files names them, and the report
        reads them by those names), and the first `report.cases` test cases' CT and liver mask."""
        runs = self.replicate_runs(wildcards.run)
        shown = self.split_of(runs[0])["test"][: self.config["report"]["cases"]]
        return {
            **layout.report_files([f"results/{run}" for run in runs], self.methods, len(self.targets),
                                  self.config["export"]["formats"]),
            "cases_ct": [f"data/nifti/{case}/ct.nii.gz" for case in shown],
            "cases_liver": [f"data/nifti/{case}/liver.nii.gz" for case in shown],
            **self.int8_inputs(wildcards.run),
        }

    def guarded_report_inputs(self, wildcards) -> dict[str, Any]:
        """Every file the guarded report reads (varprune.core.layout.guarded_report_files names them)."""
        runs = self.replicate_runs(wildcards.run)
        searches = {(index, method): self.guard_search(run, method).selected_reference()
                    for index, run in enumerate(runs) for method in self.methods}
        return layout.guarded_report_files([f"results/{run}" for run in runs], self.methods, searches,
                                           self.config["export"]["formats"])

    def final_outputs(self) -> list[str]:
        """What `rule all` builds (varprune.core.layout.final_outputs)."""
        run = self.config["run"]
        return layout.final_outputs(run, [f"results/{r}" for r in self.replicate_runs(run)],
                                    [replicate.splits for replicate in self.replicates],
                                    self.methods, len(self.targets), self.guarded)
