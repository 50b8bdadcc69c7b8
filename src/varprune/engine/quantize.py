"""Post-training INT8 quantization of an ONNX export, with a guard on the segmentation itself.

Pruning removes channels; INT8 makes the remaining ones cheaper, and the two compose. This
module quantizes the fp32 ONNX export with onnxruntime (`onnxruntime.quantization`):

- `dynamic` (default): int8 weights per output channel, activation ranges computed per call at
  run time (onnxruntime fuses them into DynamicQuantizeMatMul); no calibration data needed.
- `static`: QDQ format, int8 weights per output channel and int8 activations whose ranges come
  from calibration on training slices (never validation or test: the guard and the evaluation
  read those).
The kinds of operator quantized are `ops` (default MatMul and Gemm: the transformer's
projections and FFN, which carry the MACs; Conv adds the patch embedding and the head).
Measured on the default run (benchmarks/int8.py, 1 thread, batch 1): dynamic MatMul/Gemm was
the fastest of the four variants on dense and both pruned models, with the same Dice.

The guard: the quantized model's validation Dice (3D, per case, the training loop's own
measure) may fall at most `max_dice_drop` below the fp32 export's, else nothing is written and
the error says by how much it fell. The quantized file carries the fp32 export's metadata plus
what was done (`quantization`), so `predict` and `evaluate` run it like any export.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from varprune.core.atomic import atomic_path
from varprune.data.datasets import Volume, slice_items
from varprune.model.deployed import (
    ExportedModel,
    metadata,
    onnx_session,
    parse_metadata,
    read_onnx_metadata,
    with_onnx_metadata,
)

log = logging.getLogger(__name__)

MODES = ("static", "dynamic")


class QuantizationRefused(Exception):
    """The INT8 model lost more validation Dice than allowed, or cannot be made; nothing written."""


@dataclass(frozen=True)
class QuantizeSettings:
    """How to quantize and how much accuracy the INT8 model may lose (the `export` config slice)."""

    # Measured (benchmarks/int8.py, docs/deployment.md): dynamic MatMul/Gemm was the fastest of
    # four variants on all three models and lost no Dice; static QDQ stays available.
    mode: str = "dynamic"
    ops: tuple[str, ...] = ("MatMul", "Gemm")
    calibration_slices: int = 64
    max_dice_drop: float = 0.005  # 0.5 Dice points
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"export.quantize_mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_dice_drop < 0:
            raise ValueError(f"export.max_dice_drop must be >= 0, got {self.max_dice_drop}")

    @classmethod
    def from_config(cls, cfg: dict) -> QuantizeSettings:
        names = {"quantize_mode": "mode", "quantize_ops": "ops", "calibration_slices": "calibration_slices",
                 "max_dice_drop": "max_dice_drop", "seed": "seed"}
        values = {field: cfg[key] for key, field in names.items() if cfg.get(key) is not None}
        if "ops" in values:
            values["ops"] = tuple(values["ops"])
        return cls(**values)


@dataclass
class GuardResult:
    """The validation Dice of both models and the verdict."""

    val_dice_fp32: float
    val_dice_int8: float
    max_dice_drop: float
    accepted: bool = field(init=False)

    def __post_init__(self) -> None:
        self.accepted = bool(self.val_dice_fp32 - self.val_dice_int8 <= self.max_dice_drop)


def calibration_slices(volumes: list[Volume], count: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of `count` training slices (N, 1, H, W), float32: half of them through
    the liver and half without where there are enough, so the ranges cover the organ as well as
    the background; all of them when there are fewer."""
    items = slice_items(volumes)
    if not items:
        raise QuantizationRefused("no training slices to calibrate the INT8 model on")
    rng = np.random.default_rng(seed)
    liver = [i for i, item in enumerate(items) if item["label"].any()]
    other = [i for i, item in enumerate(items) if not item["label"].any()]
    liver, other = list(rng.permutation(liver)), list(rng.permutation(other))
    take = min(len(liver), max(count // 2, count - len(other)))  # the other half, else more liver
    chosen = liver[:take] + other[:count - take]
    return np.stack([items[i]["image"] for i in sorted(chosen)]).astype(np.float32)


def _slices_reader(base: type, name: str, slices: np.ndarray):
    """onnxruntime's CalibrationDataReader over `slices`, one slice per call."""

    class SlicesReader(base):
        def __init__(self):
            self.index = 0

        def get_next(self) -> dict | None:
            if self.index >= len(slices):
                return None
            self.index += 1
            return {name: slices[self.index - 1: self.index]}

        def rewind(self) -> None:
            self.index = 0

    return SlicesReader()


def quantize_onnx(fp32: bytes, settings: QuantizeSettings, calibration: np.ndarray | None = None) -> bytes:
    """The INT8 model (bytes) of an fp32 ONNX model; `calibration` slices for static mode."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fp32.onnx").write_bytes(fp32)
        # Shape inference and graph clean-up first, as onnxruntime recommends for quantization.
        quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "prepared.onnx"), skip_symbolic_shape=True)
        if settings.mode == "dynamic":
            quantize_dynamic(str(tmp / "prepared.onnx"), str(tmp / "int8.onnx"),
                             op_types_to_quantize=list(settings.ops), per_channel=True,
                             weight_type=QuantType.QInt8)
        else:
            if calibration is None or not len(calibration):
                raise QuantizationRefused("static INT8 quantization needs calibration slices")
            reader = _slices_reader(CalibrationDataReader, onnx_session(fp32).get_inputs()[0].name,
                                    calibration)
            quantize_static(str(tmp / "prepared.onnx"), str(tmp / "int8.onnx"), reader,
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(settings.ops),
                            per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
        return (tmp / "int8.onnx").read_bytes()


def guard(fp32: bytes, int8: bytes, spec, volumes: list[Volume], max_dice_drop: float,
          threads: int | None = None) -> GuardResult:
    """Validation Dice of the fp32 and the INT8 model, as the training loop measures it."""
    import torch

    from varprune.engine.train import validation_dice

    scores = []
    for data in (fp32, int8):
        session = onnx_session(data, threads)
        name = session.get_inputs()[0].name
        model = ExportedModel(lambda batch, s=session, n=name: s.run(None, {n: batch})[0], "onnxruntime")
        scores.append(validation_dice(model, spec, volumes, torch.device("cpu"), 16))
    return GuardResult(scores[0], scores[1], max_dice_drop)


def quantize_and_guard(fp32_path: str | os.PathLike, train: list[Volume], val: list[Volume],
                       settings: QuantizeSettings, threads: int | None = None) -> tuple[bytes, dict]:
    """The INT8 file (bytes, with its metadata) of the fp32 export at `fp32_path` and the record
    of what was done and measured, `accepted` included; nothing is written."""
    fp32_path = Path(fp32_path)
    fp32 = fp32_path.read_bytes()
    spec, provenance, meta = parse_metadata(read_onnx_metadata(fp32), fp32_path)
    if not val:
        raise QuantizationRefused(f"{fp32_path}: no validation cases to guard the INT8 model with")
    calibration = calibration_slices(train, settings.calibration_slices, settings.seed) \
        if settings.mode == "static" else None
    try:
        int8 = quantize_onnx(fp32, settings, calibration)
    except QuantizationRefused:
        raise
    except Exception as err:  # onnxruntime raises many types
        raise QuantizationRefused(f"{fp32_path}: INT8 quantization failed ({err}); nothing written") from err
    result = guard(fp32, int8, spec, val, settings.max_dice_drop, threads)
    record = {"source": str(fp32_path), "mode": settings.mode, "ops": list(settings.ops),
              "calibration_slices": 0 if calibration is None else len(calibration),
              "calibration_cases": sorted(v.case for v in train) if calibration is not None else [],
              "guard_cases": sorted(v.case for v in val), **asdict(result),
              "bytes_fp32": len(fp32), "bytes_int8": len(int8)}
    extra = {k: v for k, v in meta.items() if k not in ("format", "spec", "provenance")}
    return with_onnx_metadata(int8, metadata(spec, provenance, **extra, quantization=record)), record


def refusal(record: dict) -> str:
    """Why a record's INT8 model was refused, in one sentence."""
    drop = 100 * (record["val_dice_fp32"] - record["val_dice_int8"])
    return (f"{record['source']}: the INT8 model's validation Dice {record['val_dice_int8']:.4f} is "
            f"{drop:.2f} points below the fp32 model's {record['val_dice_fp32']:.4f}, more than "
            f"export.max_dice_drop allows ({100 * record['max_dice_drop']:.2f} points); not written")


def quantize_export(fp32_path: str | os.PathLike, out_path: str | os.PathLike, train: list[Volume],
                    val: list[Volume], settings: QuantizeSettings, threads: int | None = None) -> dict:
    """Quantize the fp32 export at `fp32_path` to `out_path`, guarded on `val`; the file appears
    only when the guard accepts it (else QuantizationRefused says by how much it fell)."""
    data, record = quantize_and_guard(fp32_path, train, val, settings, threads)
    if not record["accepted"]:
        raise QuantizationRefused(refusal(record))
    with atomic_path(out_path) as tmp:
        Path(tmp).write_bytes(data)
    log.info("%s -> %s: INT8 (%s), validation Dice %.4f (fp32 %.4f), %.1f -> %.1f MB", fp32_path, out_path,
             settings.mode, record["val_dice_int8"], record["val_dice_fp32"], record["bytes_fp32"] / 1e6,
             len(data) / 1e6)
    return record


def int8_path(fp32_path: str | os.PathLike) -> Path:
    """Where the INT8 model of an fp32 export goes: next to it, `model.onnx` -> `model.int8.onnx`."""
    path = Path(fp32_path)
    return path.with_name(f"{path.name.removesuffix('.onnx')}.int8.onnx")


def _volumes(files) -> list[Volume]:
    from varprune.data.datasets import case_paths, load_volumes

    return load_volumes(case_paths(files))


def int8_run(models: dict[str, tuple[str, str]], train_files, val_files, test_files, truth_files,
             settings: QuantizeSettings, out_folder: str | os.PathLike, evaluate: dict, cost: dict,
             threads: int | None = None) -> dict[str, dict]:
    """The pipeline's INT8 folder of a run: for each deployed model {folder: (model.pt,
    model.onnx)}, the guard's decision (`guard.json`); for the accepted ones the INT8 model, its
    test metrics and predictions (`varprune.engine.evaluate`, as any model) and `cost.json`, the fp32
    and INT8 exports of every accepted model timed side by side in interleaved rounds. Written
    into a temporary folder renamed into place at the end: all of it or nothing."""
    import shutil

    from varprune.core.atomic import write_json
    from varprune.engine.evaluate import evaluate_checkpoint

    out_folder = Path(out_folder)
    staging = out_folder.with_name(f".{out_folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    train, val = _volumes(train_files), _volumes(val_files)
    records, timers = {}, {}
    for folder, (checkpoint, fp32_path) in models.items():
        target = staging / folder
        target.mkdir(parents=True)
        data, record = quantize_and_guard(fp32_path, train, val, settings, threads)
        write_json(target / "guard.json", record)
        records[folder] = record
        if not record["accepted"]:
            log.warning("%s: INT8 refused (the run goes on without it): %s", folder, refusal(record))
            continue
        (target / "model.onnx").write_bytes(data)
        log.info("%s: INT8 accepted, validation Dice %.4f (fp32 %.4f)", folder, record["val_dice_int8"],
                 record["val_dice_fp32"])
        evaluate_checkpoint(target / "model.onnx", test_files, truth_files, target / "metrics.csv",
                            target / "pred", batch_size=evaluate["batch_size"],
                            interpolate=evaluate["interpolate"],
                            largest_component=evaluate["largest_component"], threads=threads)
        timers[folder] = (checkpoint, fp32_path, target / "model.onnx")
    for folder, record in _side_by_side(timers, cost).items():
        write_json(staging / folder / "cost.json", record)
    if out_folder.exists():
        shutil.rmtree(out_folder)
    staging.rename(out_folder)
    return records


def _side_by_side(models: dict[str, tuple], cost: dict) -> dict[str, dict]:
    """`cost.json` of every accepted model: batch-1 onnxruntime latency of its fp32 and INT8
    exports, all of them timed in the same interleaved rounds (a slow spell of the machine
    hits every model alike), with the checkpoint's params and MACs (INT8 keeps both: it makes
    each MAC cheaper and removes none)."""
    import torch

    from varprune.engine.cost import macs_full
    from varprune.engine.latency import time_interleaved
    from varprune.model.network import count_parameters, load_model

    threads = cost["threads"]
    fns, sizes = {}, {}
    for folder, (checkpoint, fp32_path, int8_file) in models.items():
        model, spec, _ = load_model(checkpoint)
        x = np.random.default_rng(0).random(spec.input_shape(1), dtype=np.float32)
        sizes[folder] = {"params": count_parameters(model),
                         "macs_full": macs_full(model, torch.from_numpy(x)),
                         "bytes_fp32": Path(fp32_path).stat().st_size,
                         "bytes_int8": Path(int8_file).stat().st_size}
        for kind, path in (("fp32", fp32_path), ("int8", int8_file)):
            session = onnx_session(Path(path).read_bytes(), threads)
            feed = {session.get_inputs()[0].name: x}
            fns[(folder, kind)] = lambda s=session, f=feed: s.run(None, f)
    if not fns:
        return {}
    rounds = cost.get("rounds", 3)
    timing = time_interleaved(fns, rounds=rounds, runs=cost["runs"], warmup=cost["warmup"])
    records = {}
    for folder in models:
        int8, fp32 = timing[(folder, "int8")], timing[(folder, "fp32")]
        records[folder] = {**sizes[folder], "latency_ms_median": int8["median_ms"],
                           "latency_ms_spread": int8["spread_ms"],
                           "latency_fp32_onnx_ms_median": fp32["median_ms"],
                           "latency_fp32_onnx_ms_spread": fp32["spread_ms"], "threads": threads,
                           "rounds": rounds, "runs": cost["runs"], "runtime": "onnxruntime", "batch": 1}
        log.info("%s: INT8 %.2f ms vs fp32 %.2f ms in onnxruntime (batch 1, %d threads)", folder,
                 int8["median_ms"], fp32["median_ms"], threads)
    return records
