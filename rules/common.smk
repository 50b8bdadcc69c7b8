"""Config validation, wildcard constraints and input functions shared by the rules."""

import re
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


def config_error(key, problem):
    """Stop before any job with a message that names the config key."""
    raise ValueError(f"Invalid config: {key}: {problem}")


from varprune.codeversion import code_fingerprint
from varprune.layout import ONESHOT_TABLE, report_files, run_models
from varprune.methods import CONTROLS, PRUNING_METHODS, method_pattern, unknown_methods


def check_config(cfg):
    """Checks that a JSON schema cannot express (relations between keys)."""
    low, high = cfg["preprocess"]["window"]
    if low >= high:
        config_error("preprocess.window", f"low ({low}) must be below high ({high})")
    syn = cfg["synthetic"]
    if syn["slices_min"] > syn["slices_max"]:
        config_error(
            "synthetic.slices_min",
            f"{syn['slices_min']} > synthetic.slices_max {syn['slices_max']}",
        )
    data = cfg["data"]
    if data["source"] == "synthetic" and data["archive"]:
        config_error(
            "data.archive",
            f"{data['archive']} is set but data.source is synthetic; "
            "set data.source: ircadb to use your archive, or remove data.archive",
        )
    # Jobs on cluster nodes parse the workflow again; the archive need only exist where it is linked.
    if (
        data["archive"]
        and workflow.is_main_process
        and not Path(data["archive"]).is_file()
    ):
        config_error("data.archive", f"{data['archive']}: no such file")
    if data["source"] == "synthetic" and data["patients"]:
        too_big = [p for p in data["patients"] if p > syn["patients"]]
        if too_big:
            config_error(
                "data.patients",
                f"{too_big} exceed synthetic.patients ({syn['patients']})",
            )
    if data["source"] == "ircadb" and data["patients"]:
        too_big = [p for p in data["patients"] if p > 20]
        if too_big:
            config_error(
                "data.patients", f"3D-IRCADb-01 has patients 1-20, not {too_big}"
            )
    unknown = unknown_methods(cfg["pruning"]["methods"])
    if unknown:
        config_error(
            "pruning.methods",
            f"unknown {unknown}; choose from {', '.join(PRUNING_METHODS)}",
        )
    dense_spec(cfg)
    check_pruning(cfg)


def check_pruning(cfg):
    """Targets increasing and reachable: the solvers' own budget arithmetic (no torch)."""
    from varprune.pruning.budget import SequenceSettings, check_cycle_targets

    pruning = cfg["pruning"]
    try:
        check_cycle_targets(
            dense_spec(cfg),
            pruning["cycle_targets"],
            SequenceSettings.from_config(pruning),
        )
    except ValueError as err:
        config_error("pruning", err)


def dense_spec(cfg):
    """The dense model's spec, with the checks every job applies (patch, head stages, sizes)."""
    from varprune.spec import ModelSpec

    try:
        return ModelSpec.from_config(cfg["model"], cfg["preprocess"]["input_size"])
    except ValueError as err:
        config_error("model", err)


check_config(config)


def patients():
    """Patient numbers of this run: the configured list, else every patient of the source."""
    if config["data"]["patients"]:
        return sorted(config["data"]["patients"])
    if config["data"]["source"] == "synthetic":
        return list(range(1, config["synthetic"]["patients"] + 1))
    return list(range(1, 21))


CASES = [f"ircad{p:02d}" for p in patients()]

# The split is checked now, so that an impossible one stops the run before any job.
from varprune.data.splits import (
    SplitError,
    make_splits,
)  # numpy only: parse stays light

try:
    SPLITS = make_splits(CASES, config["split"])
except SplitError as err:
    config_error("split", str(err))

# The rules that read only some splits name only those cases as inputs.
TRAIN_CASES, VAL_CASES, TEST_CASES = SPLITS["train"], SPLITS["val"], SPLITS["test"]
if not TEST_CASES:
    config_error("split", "the test split is empty: every model is evaluated on it")


wildcard_constraints:
    method=method_pattern(),
    k=r"[1-9]\d*",
    case=r"ircad\d{2}",
    run=r"[A-Za-z0-9_.-]+(/seed\d+)?",
    model="|".join(["dense", *CONTROLS, r"[a-z]+/cycle\d+"]),
    fmt=r"onnx|torchscript",


def canonical(value):
    """`value` with dict keys sorted at every level.

    Snakemake compares params by their text: without this, reordering keys in a config file
    (or a YAML tool sorting them) would rerun jobs whose values did not change.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def cfg(dotted):
    """A narrow, canonical slice of the config for a rule's params: cfg("data.download")."""
    node = config
    for key in dotted.split("."):
        node = node[key]
    return canonical(node)


# Replicates: one per seed of `replicates.seeds`, each at results/{run}/seed{s}/ (the seed sets
# train.seed, finetune.seed and pruning.seed); none given: one replicate at results/{run}/.
SEEDS = config["replicates"]["seeds"] or []


def replicate_runs(run):
    """The result folders (as `run` wildcard values) of every replicate of `run`."""
    return [f"{run}/seed{s}" for s in SEEDS] if SEEDS else [run]


def replicate_seed(run):
    """The seed of a replicate folder, or None for the single replicate of a run."""
    match = re.fullmatch(r".+/seed(\d+)", run)
    return int(match.group(1)) if match else None


def seeded(section):
    """Params function: the config slice `section` with its seed set to the replicate's."""

    def params(wildcards):
        value = cfg(section)
        seed = replicate_seed(wildcards.run)
        return value if seed is None else canonical({**value, "seed": seed})

    return params


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


def previous_model(wildcards):
    """Input function: cycle k starts from cycle k-1 of the same method, cycle 1 from dense."""
    k = int(wildcards.k)
    if k == 1:
        return f"results/{wildcards.run}/dense/model.pt"
    return f"results/{wildcards.run}/{wildcards.method}/cycle{k - 1}/model.pt"


def cycle_pruning(wildcards):
    """Params function: the pruning slice a cycle needs, with only its own target and its
    predecessor's, so appending a target leaves earlier cycles untouched."""
    k = int(wildcards.k)
    if k > len(TARGETS):
        raise ValueError(
            f"cycle {k} asked for, but pruning.cycle_targets has {len(TARGETS)} targets"
        )
    slice_ = seeded("pruning")(wildcards)
    slice_ = {
        key: value
        for key, value in slice_.items()
        if key not in ("methods", "cycle_targets")
    }
    slice_["target"] = TARGETS[k - 1]
    slice_["previous_target"] = TARGETS[k - 2] if k > 1 else 0.0
    return canonical(slice_)


def oneshot_pruning(wildcards):
    """Params function: the pruning slice the one-shot curves need, everything but the cycle
    targets (and the method list, passed on its own), so appending a cycle does not redo them.
    """
    slice_ = seeded("pruning")(wildcards)
    return canonical(
        {k: v for k, v in slice_.items() if k not in ("methods", "cycle_targets")}
    )


def gpus(section):
    """GPUs a training job asks the scheduler for: 1 when `{section}.device` is cuda."""
    return 1 if config[section]["device"] == "cuda" else 0


def report_inputs(wildcards):
    """Every file the report reads (varprune.layout.report_files names them, and the report
    reads them by those names), and the first `report.cases` test cases' CT and liver mask.
    """
    shown = TEST_CASES[: config["report"]["cases"]]
    return {
        **report_files(
            [f"results/{run}" for run in replicate_runs(wildcards.run)],
            METHODS,
            len(TARGETS),
            config["export"]["formats"],
        ),
        "cases_ct": expand("data/nifti/{case}/ct.nii.gz", case=shown),
        "cases_liver": expand("data/nifti/{case}/liver.nii.gz", case=shown),
    }


def final_outputs():
    """What `rule all` builds (every model of every replicate, and the run's report)."""
    outputs = ["data/splits.json"]
    for run in replicate_runs(config["run"]):
        folder = f"results/{run}"
        outputs += [
            str(model.path(folder, kind))
            for model in run_models(METHODS, len(TARGETS))
            for kind in ("model", "metrics", "cost")
        ]
        outputs.append(f"{folder}/{ONESHOT_TABLE}")
    outputs.append(f"results/{config['run']}/report/report.html")
    return outputs
