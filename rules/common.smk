"""Config validation, wildcard constraints and input functions shared by the rules."""

import sys
from pathlib import Path

from snakemake.utils import validate

# The checkout's library, for the parse-time checks below and for every job (also inside
# `--sdm conda` envs, which hold the dependencies only).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from varprune.checkout import use_checkout_library

use_checkout_library(str(Path(workflow.basedir) / "src"))

validate(config, schema="../config/schema.yaml")

SRC = Path(workflow.basedir) / "src" / "varprune"


from varprune import layout
from varprune.codeversion import code_fingerprint
from varprune.methods import CONTROLS, method_pattern
from varprune.replicates import RUN_PATTERN, replicate_of
from varprune.resources import cohort, rule_resources
from varprune.workflow import cases as case_plan, checks, params as policy

# Relations between keys that the schema cannot express (varprune.workflow.checks). Jobs on
# cluster nodes parse the workflow again; the archive need only exist where it is linked.
checks.check_config(config, archive_must_exist=workflow.is_main_process)


# Cases, replicates (seeds and, with replicates.folds, the folds of a k-fold split, each a
# folder results/{run}/{replicate}/) and their splits, checked now so that an impossible one
# stops the run before any job (varprune.workflow.cases).
NIFTI_CASES = (
    case_plan.nifti_case_files(config) if config["data"]["source"] == "nifti" else {}
)
CASES = case_plan.case_ids(config, NIFTI_CASES)
REPLICATES = case_plan.checked_replicates(config)
FOLDS = sorted({r.fold for r in REPLICATES if r.fold is not None})
SPLITS = case_plan.checked_splits(CASES, config, FOLDS)


def split_config(fold):
    """The split slice of one fold (None: the configured split)."""
    return case_plan.fold_split_config(config, fold)


def split_of(run):
    """The split (train/val/test case lists) of a replicate's `run` wildcard value."""
    return SPLITS[replicate_of(run).fold]


def split_file(wildcards):
    """Input function: the split file of the replicate (provenance of the models trained by it)."""
    return replicate_of(wildcards.run).splits


def cases(subset, pattern="data/preprocessed/{case}.npz"):
    """Input function: `pattern` for every case of the replicate's `subset` (train, val, test);
    the rules that read only some splits name only those cases as inputs."""

    def files(wildcards):
        return expand(pattern, case=split_of(wildcards.run)[subset])

    return files


wildcard_constraints:
    method=method_pattern(),
    k=r"[1-9]\d*",
    fold=r"\d+",
    case=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    run=RUN_PATTERN,
    model="|".join(
        [
            "dense",
            *CONTROLS,
            rf"(?:{method_pattern()})/cycle\d+",  # any registered method name
            rf"(?:{method_pattern()})/selected",
            r"dense_long/round\d+",
        ]
    ),
    fmt=r"onnx|torchscript",


def replicate_runs(run):
    """The result folders (as `run` wildcard values) of every replicate of `run`."""
    return [replicate.run(run) for replicate in REPLICATES]


def cfg(dotted):
    """A narrow, canonical slice of the config for a rule's params: cfg("data.download")."""
    return policy.config_slice(config, dotted)


def seeded(section):
    """Params function: the config slice `section` as its jobs see it, with the replicate's seed
    (varprune.workflow.params: what counts as a param)."""
    return lambda wildcards: policy.seeded_slice(
        config[section], replicate_of(wildcards.run).seed
    )


def code_version(script):
    """Fingerprint of the src/varprune modules that scripts/`script` imports (transitively),
    passed as a param: editing library code a rule runs reruns that rule and what follows;
    editing code it never imports does not (varprune.codeversion finds the closure)."""
    return code_fingerprint(Path(workflow.basedir) / "scripts" / script, SRC)


def state_dir(model):
    """Params function: the resume-state folder of a model ("dense", "{method}/cycle{k}"),
    undeclared so that Snakemake keeps it when a job fails."""

    def folder(wildcards):
        name = model.format(**dict(wildcards.items()))
        return f"results/{wildcards.run}/.state/{name}"

    return folder


METHODS = config["pruning"]["methods"]
TARGETS = config["pruning"]["cycle_targets"]


# Guarded schedule (pruning.schedule: guarded): a method's cycles follow the `guard` checkpoint's
# decisions (varprune.pruning.guard) instead of pruning.cycle_targets.
GUARDED = config["pruning"]["schedule"] == "guarded"


def guard_search(run, method):
    """A method's guarded search (varprune.pruning.guard_search), its decisions read through
    the `guard` checkpoint: what is missing, Snakemake schedules first."""
    from varprune.pruning.guard import GuardSettings
    from varprune.pruning.guard_search import GuardSearch

    guard = config["pruning"]["guard"]
    return GuardSearch(
        run_folder=f"results/{run}",
        method=method,
        settings=GuardSettings.from_config(guard),
        read=lambda k: checkpoints.guard.get(run=run, method=method, k=k).output[0],
        reference=guard["reference"],
    )


def distill_teacher(wildcards):
    """Input function: the dense checkpoint when fine-tuning distils from it (finetune.distill
    with teacher dense), else nothing (teacher parent is the job's own starting checkpoint).
    """
    distill = config["finetune"]["distill"]
    if distill["weight"] and distill["teacher"] == "dense":
        return f"results/{wildcards.run}/dense/model.pt"
    return []


def previous_model(wildcards):
    """Input function: cycle k starts from cycle k-1 of the same method, cycle 1 from dense;
    guarded, from the cycle the guard's last decision names. The decisions are read through the
    checkpoint but not declared as inputs: a decision rewritten with the same plan (say after
    raising max_cycles) must not redo the cycles; a changed plan changes the parent or the
    target (a param), which does."""
    k = int(wildcards.k)
    if GUARDED:
        return guard_search(wildcards.run, wildcards.method).parent_model(k)
    return layout.cycle_model(f"results/{wildcards.run}", wildcards.method, k - 1)


def earlier_decisions(wildcards):
    """Input function of `guard`: the decisions before cycle k."""
    search = guard_search(wildcards.run, wildcards.method)
    return search.earlier_decision_files(int(wildcards.k))


def guard_reference(wildcards):
    """Input function: the model cycle k is judged against: dense_long fine-tuned as often as
    the cycle's lineage (round = its depth), or dense (pruning.guard.reference)."""
    return guard_search(wildcards.run, wildcards.method).reference_model(
        int(wildcards.k)
    )


def guard_fallback(wildcards):
    """Input function: where the search goes back to if cycle k fails (the last cycle within
    tolerance before it, or dense)."""
    return guard_search(wildcards.run, wildcards.method).fallback_model(
        int(wildcards.k)
    )


def reference_parent(wildcards):
    """Input function: reference round k starts from round k-1, round 1 from dense."""
    k = int(wildcards.k)
    return f"results/{wildcards.run}/{layout.reference_folder(k - 1)}/model.pt"


def selection_inputs(wildcards):
    """Input function of `select`: every decision of the search and the selected checkpoint."""
    return guard_search(wildcards.run, wildcards.method).selection_inputs()


def guarded_report_inputs(wildcards):
    """Every file the guarded report reads (varprune.layout.guarded_report_files names them)."""
    runs = replicate_runs(wildcards.run)
    searches = {
        (index, method): guard_search(run, method).selected_reference()
        for index, run in enumerate(runs)
        for method in METHODS
    }
    return layout.guarded_report_files(
        [f"results/{run}" for run in runs],
        METHODS,
        searches,
        config["export"]["formats"],
    )


def cycle_pruning(wildcards):
    """Params function: the pruning slice a cycle needs, with only its own target and its
    predecessor's, so appending a target leaves earlier cycles untouched."""
    k = int(wildcards.k)
    if GUARDED:
        targets = guard_search(wildcards.run, wildcards.method).targets(k)
    else:
        targets = policy.scheduled_targets(TARGETS, k)
    return policy.cycle_slice(seeded("pruning")(wildcards), *targets)


def oneshot_pruning(wildcards):
    """Params function: the pruning slice of the one-shot curves (no cycle targets)."""
    return policy.oneshot_slice(seeded("pruning")(wildcards))


# GPUs the profile offers a job: Snakemake's global resource `gpu` (`resources: [gpu=4]` in a
# profile, or `--resources gpu=4`). Jobs whose device is auto ask for one only where it is set.
OFFERED_GPUS = int(getattr(workflow.global_resources.get("gpu"), "value", None) or 0)
COHORT = cohort(
    config,
    *(
        max(len(split[subset]) for split in SPLITS.values())
        for subset in ("train", "val", "test")
    ),
)


LATENCY_MODELS = layout.latency_models(METHODS, len(TARGETS), GUARDED)


def latency_inputs(wildcards):
    """Input function of `latency`: the checkpoint of every model the run's latency job times."""
    return [f"results/{wildcards.run}/{folder}/model.pt" for folder in LATENCY_MODELS]


def timing_threads():
    """Threads reserved for the jobs that time latency. With cost.alone, every core of a local run
    (their torch still uses cost.threads), so that latency is timed with no other job running; on a cluster
    each job has its own allocation and asks for cost.threads."""
    threads = config["cost"]["threads"]
    # A cluster job parses the workflow again in remote mode: it must ask what the submitting
    # process asked (its srun step refuses more CPUs than the allocation has).
    if config["cost"]["alone"] and workflow.local_exec and not workflow.remote_exec:
        cores = workflow.global_resources["_cores"].value
        return max(threads, cores or threads)
    return threads


def job_resources(rule, rounds=1):
    """mem_mb, runtime (min) and gpu of `rule`, estimated from the config (varprune.resources;
    `resources.rules.{rule}` in the config sets them outright)."""
    try:
        return rule_resources(config, rule, COHORT, rounds, OFFERED_GPUS)
    except (KeyError, TypeError) as err:
        checks.config_error(f"resources.rules.{rule}", err)


def report_inputs(wildcards):
    """Every file the report reads (varprune.layout.report_files names them, and the report
    reads them by those names), and the first `report.cases` test cases' CT and liver mask.
    """
    shown = split_of(replicate_runs(wildcards.run)[0])["test"][
        : config["report"]["cases"]
    ]
    return {
        **layout.report_files(
            [f"results/{run}" for run in replicate_runs(wildcards.run)],
            METHODS,
            len(TARGETS),
            config["export"]["formats"],
        ),
        "cases_ct": expand("data/nifti/{case}/ct.nii.gz", case=shown),
        "cases_liver": expand("data/nifti/{case}/liver.nii.gz", case=shown),
        **int8_inputs(wildcards.run),
    }


QUANTIZE_KEYS = ("quantize_mode", "quantize_ops", "calibration_slices", "max_dice_drop")


def quantize_settings():
    """Params of the INT8 jobs: the export keys that change an INT8 model or its verdict."""
    return policy.canonical({key: config["export"][key] for key in QUANTIZE_KEYS})


def int8_sources(name):
    """Input function of `int8`: `name` (model.pt or model.onnx) of every deployed model."""

    def files(wildcards):
        models = layout.int8_models(METHODS, len(TARGETS))
        return [f"results/{wildcards.run}/{model.folder}/{name}" for model in models]

    return files


def int8_inputs(run):
    """With export.quantize int8: the first replicate's INT8 folder, for the report."""
    if config["export"]["quantize"] != "int8":
        return {}
    return {layout.INT8_KEY: f"results/{replicate_runs(run)[0]}/{layout.INT8}"}


def final_outputs():
    """What `rule all` builds (varprune.layout.final_outputs)."""
    return layout.final_outputs(
        config["run"],
        [f"results/{run}" for run in replicate_runs(config["run"])],
        [replicate.splits for replicate in REPLICATES],
        METHODS,
        len(TARGETS),
        GUARDED,
    )
