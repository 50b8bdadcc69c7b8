"""What each job asks a scheduler for (runtime, memory, a GPU), computed from the config.

A SLURM job that asks too little is killed at its time or memory limit; one that asks far too
much waits in the queue. Fixed numbers fit one preset only (the paper's ViT-B at 224² for 100
epochs needs hours where the default needs minutes), so each heavy job's request is estimated
from what it computes: the model's MACs per input (closed form, `varprune.model.macs`), how many
inputs it runs forward and backward (epochs or steps, batch, cases, slices), and a throughput.

    runtime [min] = overhead_min + safety * work / throughput / 60
        work       = 3 * MACs * trained inputs + MACs * evaluated inputs
        throughput = cpu_gmacs_per_thread * threads (CPU) or gpu_gmacs (GPU), in GMAC/s
    mem_mb = overhead_mb + data + 24 bytes per parameter (weights, gradients, Adam's two
             moments, the best and the averaged copy) + activations (CPU jobs only: on a GPU
             they live in GPU memory)

Slices per case are not known when Snakemake plans the jobs (the data may not exist yet), so
an upper bound stands in: `resources.slices_per_case`, else the source's (synthetic: its
`slices_max`; 3D-IRCADb-01: 260; NIfTI sets such as LiTS: 1000). Every estimate is rounded up
(5 min, 500 MB) and any rule's numbers can be set outright in `resources.rules`. Torch-free:
it runs when the workflow is parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from varprune.model import macs
from varprune.model.spec import ModelSpec

# An upper bound of the slices of one case, when the config gives none.
SLICES_PER_CASE = {"ircadb": 260, "nifti": 1000}
# Rules that train: the config section whose budget they spend.
TRAINING_RULES = {"train": "train", "prune_cycle": "finetune", "reference_round": "finetune",
                  "dense_long": "finetune", "transformer_off": "finetune"}
# Rules whose work is small and does not grow with the model: a fixed request.
FIXED = {
    "synthesize": (2000, 30), "convert": (None, 15), "preprocess": (None, 15), "split": (1000, 5),
    "cost": (3000, 15), "latency": (4000, 60), "export": (4000, 15), "report": (3000, 15),
    "report_guarded": (3000, 15),
    "guard": (2000, 5), "select": (2000, 5),
}
# Peak memory of converting or preprocessing one case, in int16 volumes of that case, on top of
# overhead_mb: benchmarks/large_case.py measured 3.55 (preprocess) and 2.92 (evaluate) at 512² x 1000.
DATA_VOLUMES = 4


@dataclass(frozen=True)
class Calibration:
    """The `resources` slice of the config: throughputs, margins and per-rule overrides."""

    cpu_gmacs_per_thread: float = 25.0
    gpu_gmacs: float = 567.0  # the default preset training on one H200 (benchmarks/gpu.py)
    safety: float = 3.0
    overhead_min: float = 5.0
    overhead_mb: float = 1500.0
    slices_per_case: int | None = None
    rules: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict | None) -> Calibration:
        cfg = cfg or {}
        return cls(**{k: v for k, v in cfg.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Cohort:
    """How many cases each split holds, and how many slices a case may have."""

    train: int
    val: int
    test: int
    slices: int
    volume_mb: float  # one original CT as int16


def cohort(config: dict, train: int, val: int, test: int) -> Cohort:
    """The cohort of a run: split sizes, and the slices and voxels of its largest case."""
    cal = Calibration.from_config(config.get("resources"))
    source = config["data"]["source"]
    syn = config["synthetic"]
    if cal.slices_per_case:
        slices = cal.slices_per_case
    elif source == "synthetic":
        slices = syn["slices_max"]
    else:
        slices = SLICES_PER_CASE[source]
    side = syn["size"] if source == "synthetic" else 512
    return Cohort(train, val, test, slices, side * side * slices * 2 / 1e6)


def dense_spec(config: dict) -> ModelSpec:
    return ModelSpec.from_config(config["model"], config["preprocess"]["input_size"])


def forward_gmacs(spec: ModelSpec) -> float:
    """GMACs of one forward pass of the dense model on one input."""
    return macs.model_macs(spec.to_dict(), [(layer.inner, layer.ffn) for layer in spec.layers]) / 1e9


def parameters(spec: ModelSpec) -> int:
    """Parameters of the transformer and the patch embedding (the decoder's are few beside them)."""
    embed = spec.patch ** spec.spatial_dims * spec.in_channels * spec.hidden
    layers = sum(4 * spec.hidden * layer.inner + 2 * spec.hidden * layer.ffn for layer in spec.layers)
    return embed + layers


def activation_floats(spec: ModelSpec) -> int:
    """Floats one training input keeps for the backward pass: per layer the residual stream,
    norms, q/k/v, projections (about 10 hidden-wide tensors per token), the FFN's two wide
    tensors, and three attention maps per head; the decoder about 30 full-resolution maps."""
    size = spec.img_size
    tokens = macs.tokens(size, spec.patch)
    per_token = sum(10 * spec.hidden + 2 * layer.ffn + 3 * layer.heads * tokens for layer in spec.layers)
    decoder_channels = spec.feature_size if spec.arch == "unetr" else spec.head_channels[-1]
    return tokens * per_token + 30 * macs.voxels(size) * decoder_channels


def items(spec: ModelSpec, cases: int, slices: int, training: bool) -> int:
    """Inputs per pass over `cases`: slices in 2D; in 3D, four random slabs per case when
    training (`datasets.slab_items`) and overlapping sliding windows (about twice the slabs that
    tile a case) when evaluating."""
    if spec.spatial_dims == 2:
        return cases * slices
    if training:
        return cases * 4
    return cases * 2 * math.ceil(slices / spec.depth)


def trained_inputs(section: dict, n_items: int) -> tuple[int, int]:
    """(inputs trained on, epochs) under a section's budget, as `train._budget` counts them."""
    batch = max(1, min(section["batch_size"], n_items))
    per_epoch = max(1, n_items // batch)
    steps = section.get("steps") or section["epochs"] * per_epoch
    return steps * batch, math.ceil(steps / per_epoch)


def uses_gpu(device: str, offered_gpus: int) -> bool:
    """A job asks for a GPU when its device is cuda, or auto on a profile that offers GPUs."""
    return device == "cuda" or (device == "auto" and offered_gpus > 0)


@dataclass(frozen=True)
class Work:
    """What one job computes and holds."""

    gmacs: float  # forward and backward, in GMAC
    threads: int
    gpu: bool
    data_mb: float = 0.0
    model_mb: float = 0.0
    activation_mb: float = 0.0  # on the host: CPU jobs only


def training_work(config: dict, rule: str, group: Cohort, rounds: int, offered_gpus: int) -> Work:
    """A training or fine-tuning job: its epochs (times `rounds` for the controls that fine-tune
    once per cycle) and one validation pass per epoch; a cycle adds its calibration batches."""
    section = config[TRAINING_RULES[rule]]
    spec = dense_spec(config)
    mac = forward_gmacs(spec)
    inputs, epochs = trained_inputs(section, items(spec, group.train, group.slices, training=True))
    val = items(spec, group.val, group.slices, training=False)
    # Forward and backward (3 forwards' worth), plus the teacher's forward when distilling.
    passes = 3 + int(bool((section.get("distill") or {}).get("weight")))
    gmacs = rounds * (passes * mac * inputs + mac * val * epochs)
    if rule == "prune_cycle":
        pruning = config["pruning"]
        gmacs += 3 * mac * pruning["calibration_batches"] * pruning["calibration_batch_size"]
    gpu = uses_gpu(section["device"], offered_gpus)
    voxels = config["preprocess"]["input_size"] ** 2 * group.slices
    return Work(
        gmacs=gmacs, threads=section["threads"], gpu=gpu,
        data_mb=(group.train + group.val) * voxels * 5 / 1e6,  # float32 image + uint8 label
        model_mb=24 * parameters(spec) / 1e6,
        activation_mb=0.0 if gpu else 4 * section["batch_size"] * activation_floats(spec) / 1e6,
    )


def inference_work(config: dict, rule: str, group: Cohort, offered_gpus: int) -> Work:
    """Evaluation of the test cases, or the one-shot curves (every method at every point on the
    validation and test cases)."""
    spec = dense_spec(config)
    mac = forward_gmacs(spec)
    if rule == "oneshot":
        section = config["finetune"]
        oneshot = config["oneshot"]
        points = len(oneshot["targets"]) if oneshot["targets"] else oneshot["points"]
        passes = len(config["pruning"]["methods"]) * (points + 1)
        cases = group.val + group.test
    else:
        section, passes, cases = config["evaluate"], 1, group.test
    gpu = uses_gpu(section["device"], offered_gpus)
    if rule == "oneshot":  # calibration: a backward pass, with the criterion's hooks keeping
        # each layer's activations and gradients besides autograd's
        activations = 2 * 4 * config["pruning"]["calibration_batch_size"] * activation_floats(spec)
        held = cases + group.train
    else:  # inference keeps no activations for a backward pass: about a third
        activations = 4 * section["batch_size"] * activation_floats(spec) / 3
        held = cases
    return Work(
        gmacs=passes * mac * items(spec, cases, group.slices, training=False),
        threads=section["threads"], gpu=gpu,
        data_mb=held * config["preprocess"]["input_size"] ** 2 * group.slices * 5 / 1e6 + 4 * group.volume_mb,
        model_mb=4 * parameters(spec) / 1e6,
        activation_mb=0.0 if gpu else activations / 1e6,
    )


def request(work: Work, cal: Calibration) -> dict:
    """The scheduler request for `work`, rounded up."""
    throughput = cal.gpu_gmacs if work.gpu else cal.cpu_gmacs_per_thread * max(1, work.threads)
    runtime = cal.overhead_min + cal.safety * work.gmacs / throughput / 60
    mem = cal.overhead_mb + work.data_mb + work.model_mb + work.activation_mb
    return {"mem_mb": 500 * math.ceil(mem / 500), "runtime": 5 * math.ceil(runtime / 5),
            "gpu": int(work.gpu)}


def unknown_rules(config: dict) -> list[str]:
    """Names in `resources.rules` that no rule estimated here has (a typo would be ignored)."""
    known = {*TRAINING_RULES, *FIXED, "evaluate", "oneshot"}
    return sorted(set(Calibration.from_config(config.get("resources")).rules) - known)


def rule_resources(config: dict, rule: str, group: Cohort, rounds: int = 1, offered_gpus: int = 0) -> dict:
    """mem_mb, runtime (minutes) and gpu for one rule, with `resources.rules.{rule}` on top."""
    cal = Calibration.from_config(config.get("resources"))
    if rule in TRAINING_RULES:
        out = request(training_work(config, rule, group, rounds, offered_gpus), cal)
    elif rule in ("evaluate", "oneshot"):
        out = request(inference_work(config, rule, group, offered_gpus), cal)
    elif rule in FIXED:
        mem, runtime = FIXED[rule]
        if mem is None:  # a whole original CT and its masks, a few times over
            mem = 500 * math.ceil((cal.overhead_mb + DATA_VOLUMES * group.volume_mb) / 500)
        out = {"mem_mb": mem, "runtime": runtime, "gpu": 0}
    else:
        raise KeyError(f"no resource estimate for rule {rule!r}")
    return {**out, **(cal.rules.get(rule) or {})}
