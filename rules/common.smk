"""Config validation, wildcard constraints and the wiring of the rules' input functions (their
logic is in varprune.workflow, where it is unit-tested)."""

import sys
from pathlib import Path

from snakemake.utils import validate

# The checkout's library, for the parse-time checks below and for every job (also inside
# `--sdm conda` envs, which hold the dependencies only).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from varprune.core.checkout import use_checkout_library

use_checkout_library(str(Path(workflow.basedir) / "src"))

validate(config, schema="../config/schema.yaml")

SRC = Path(workflow.basedir) / "src" / "varprune"


from varprune.core import layout
from varprune.core.codeversion import code_fingerprint
from varprune.core.methods import CONTROLS, method_pattern
from varprune.study.replicates import RUN_PATTERN
from varprune.workflow import cases as case_plan, checks, params as policy
from varprune.workflow.inputs import RuleInputs
from varprune.workflow.requests import JobRequests

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

METHODS = config["pruning"]["methods"]
TARGETS = config["pruning"]["cycle_targets"]
# Guarded schedule (pruning.schedule: guarded): a method's cycles follow the `guard`
# checkpoint's decisions (varprune.pruning.guard) instead of pruning.cycle_targets.
GUARDED = config["pruning"]["schedule"] == "guarded"

# The rules' input and params functions (varprune.workflow.inputs); a guarded search reads its
# decisions through the `guard` checkpoint: what is missing, Snakemake schedules first.
inputs = RuleInputs(
    config,
    SPLITS,
    REPLICATES,
    read_decision=lambda run, method, k: checkpoints.guard.get(
        run=run, method=method, k=k
    ).output[0],
)


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


def cfg(dotted):
    """A narrow, canonical slice of the config for a rule's params: cfg("data.download")."""
    return policy.config_slice(config, dotted)


def code_version(script):
    """Fingerprint of the src/varprune modules that scripts/`script` imports (transitively),
    passed as a param: editing library code a rule runs reruns that rule and what follows;
    editing code it never imports does not (varprune.core.codeversion finds the closure).
    """
    return code_fingerprint(Path(workflow.basedir) / "scripts" / script, SRC)


# What each job asks for (varprune.workflow.requests). GPUs: Snakemake's global resource `gpu`
# (`resources: [gpu=4]` in a profile); jobs whose device is auto ask for one only where it is
# set. A cluster job parses the workflow again in remote mode and must ask what its submitter
# asked, so only a local run's cores count for the jobs that time latency.
jobs = JobRequests.for_splits(
    config,
    SPLITS,
    offered_gpus=int(getattr(workflow.global_resources.get("gpu"), "value", None) or 0),
    local_cores=(
        workflow.global_resources["_cores"].value
        if workflow.local_exec and not workflow.remote_exec
        else None
    ),
)
