"""Config validation, wildcard constraints and input functions shared by the rules."""

import hashlib
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/schema.yaml")

SRC = Path(workflow.basedir) / "src" / "varprune"


def config_error(key, problem):
    """Stop before any job with a message that names the config key."""
    raise ValueError(f"Invalid config: {key}: {problem}")


def check_config(cfg):
    """Checks that a JSON schema cannot express (relations between keys)."""
    low, high = cfg["preprocess"]["window"]
    if low >= high:
        config_error("preprocess.window", f"low ({low}) must be below high ({high})")
    syn = cfg["synthetic"]
    if syn["slices_min"] > syn["slices_max"]:
        config_error("synthetic.slices_min", f"{syn['slices_min']} > synthetic.slices_max {syn['slices_max']}")
    data = cfg["data"]
    if data["source"] == "synthetic" and data["patients"]:
        too_big = [p for p in data["patients"] if p > syn["patients"]]
        if too_big:
            config_error("data.patients", f"{too_big} exceed synthetic.patients ({syn['patients']})")
    if data["source"] == "ircadb" and data["patients"]:
        too_big = [p for p in data["patients"] if p > 20]
        if too_big:
            config_error("data.patients", f"3D-IRCADb-01 has patients 1-20, not {too_big}")


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
from varprune.data.splits import SplitError, make_splits  # numpy only: parse stays light

try:
    SPLITS = make_splits(CASES, config["split"])
except SplitError as err:
    config_error("split", str(err))

# The rules that read only some splits name only those cases as inputs.
TRAIN_CASES, VAL_CASES, TEST_CASES = SPLITS["train"], SPLITS["val"], SPLITS["test"]
if not TEST_CASES:
    config_error("split", "the test split is empty: every model is evaluated on it")

# The library modules each rule runs, for code_version().
TRAIN_CODE = ("model.py", "train.py", "inference.py", "data/datasets.py", "data/preprocess.py")
EVAL_CODE = ("model.py", "evaluate.py", "inference.py", "data/preprocess.py")


wildcard_constraints:
    case=r"ircad\d{2}",
    run=r"[A-Za-z0-9_.-]+",
    model=r"dense|[a-z]+/cycle\d+",


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


def code_version(*modules):
    """Fingerprint of the src/varprune modules a rule runs, passed as a param.

    Snakemake tracks a script: rule by its script's mtime only; with this param, editing the
    library code a rule depends on reruns that rule (and what follows) too.
    """
    digest = hashlib.sha256()
    for module in ("atomic.py", "runlog.py", *modules):
        digest.update((SRC / module).read_bytes())
    return digest.hexdigest()[:16]


def state_dir(model):
    """Params function: the resume-state folder of a model, undeclared so Snakemake keeps it."""

    def folder(wildcards):
        return f"results/{wildcards.run}/.state/{model}"

    return folder


def model_outputs(model):
    """The files every model (dense or a pruning cycle) gets: checkpoint, metrics, cost."""
    base = f"results/{config['run']}/{model}"
    return [f"{base}/model.pt", f"{base}/metrics.csv", f"{base}/cost.json"]


def final_outputs():
    """What `rule all` builds."""
    return [
        "data/splits.json",
        *model_outputs("dense"),
    ]
