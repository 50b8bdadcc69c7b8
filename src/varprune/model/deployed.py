"""Run any model file the project writes: a checkpoint (`.pt`, PyTorch), an ONNX export
(`.onnx`, onnxruntime; INT8 files included) or a TorchScript export (`.torchscript`/`.ts`).

The runtime is chosen by the file's suffix. Exports carry what a deployment needs beside the
weights, under the key `varprune` (ONNX `metadata_props`; a TorchScript extra file): the model
spec (input shape, 2D or 3D) and the checkpoint's provenance, whose preprocessing `predict`
applies. An export without it (written before varprune recorded it) is refused with the fix.
Exported models run in the precision they were written in; autocast is for checkpoints.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from varprune.model.network import CheckpointError, ModelSpec, check_spec_bounds, load_model

METADATA_KEY = "varprune"
METADATA_FORMAT = "varprune-export-1"
RUNTIMES = {".pt": "pytorch", ".onnx": "onnxruntime", ".torchscript": "torchscript", ".ts": "torchscript"}


def runtime_of(path: str | os.PathLike) -> str:
    """The runtime a model file runs in, from its suffix; refuse other files."""
    suffix = Path(path).suffix.lower()
    if suffix not in RUNTIMES:
        raise CheckpointError(f"{path}: unknown model file type {suffix or '(none)'!r}; give a checkpoint "
                              f"(.pt), an ONNX export (.onnx) or a TorchScript export (.torchscript, .ts)")
    return RUNTIMES[suffix]


def metadata(spec: ModelSpec, provenance: dict, **extra) -> str:
    """The JSON text an export carries (spec, provenance and e.g. its quantization)."""
    return json.dumps({"format": METADATA_FORMAT, "spec": spec.to_dict(), "provenance": provenance, **extra},
                      sort_keys=True)


def with_onnx_metadata(data: bytes, text: str) -> bytes:
    """An ONNX file (bytes) with `text` stored under METADATA_KEY (replacing any earlier value)."""
    import onnx

    proto = onnx.load_from_string(data)
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    return proto.SerializeToString()


def read_onnx_metadata(data: bytes) -> str | None:
    import onnx

    proto = onnx.load_from_string(data)
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


def parse_metadata(text: str | None, path: str | os.PathLike) -> tuple[ModelSpec, dict, dict]:
    if not text:
        raise CheckpointError(f"{path}: this export carries no varprune metadata (model spec and "
                              "preprocessing); export it again from its model.pt with `varprune export`")
    try:
        meta = json.loads(text)
        if meta.get("format") != METADATA_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {METADATA_FORMAT!r}")
        check_spec_bounds(meta["spec"])
        spec = ModelSpec.from_dict(meta["spec"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable varprune metadata ({err})") from err
    return spec, meta.get("provenance") or {}, meta


class ExportedModel:
    """An exported model behind the calls `predict_volume` makes of a torch module: `eval()`,
    `to(device)` and `model(batch) -> logits` (a tensor on the batch's device)."""

    def __init__(self, run, runtime: str):
        self.run, self.runtime = run, runtime

    def eval(self) -> ExportedModel:
        return self

    def to(self, _device) -> ExportedModel:
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.run(np.ascontiguousarray(batch.detach().float().cpu().numpy()))
        return torch.from_numpy(np.asarray(out)).to(batch.device)


def onnx_session(data: bytes, threads: int | None = None, device: str = "cpu"):
    """An onnxruntime session on the CPU (or CUDA when asked and this onnxruntime has it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise CheckpointError("device cuda: this onnxruntime has no CUDA provider (install "
                                  "onnxruntime-gpu), or run the .pt checkpoint on the GPU")
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(data, options, providers=providers)


@dataclass
class Loaded:
    """A model ready to predict, whatever its file: the callable, its spec and provenance."""

    model: object  # an nn.Module or an ExportedModel
    spec: ModelSpec
    provenance: dict
    runtime: str
    meta: dict  # the export's metadata (quantization...); {} for checkpoints


def load_any(path: str | os.PathLike, threads: int | None = None, device: str = "cpu") -> Loaded:
    """Load a checkpoint or an export by its suffix (see the module docstring)."""
    runtime = runtime_of(path)
    if runtime == "pytorch":
        model, spec, provenance = load_model(path)
        return Loaded(model, spec, provenance, runtime, {})
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    data = path.read_bytes()
    if runtime == "onnxruntime":
        try:
            text = read_onnx_metadata(data)
        except Exception as err:  # onnx raises DecodeError and others for foreign files
            raise CheckpointError(f"{path}: not a readable ONNX file ({err})") from err
        spec, provenance, meta = parse_metadata(text, path)
        session = onnx_session(data, threads, device)
        name = session.get_inputs()[0].name
        return Loaded(ExportedModel(lambda batch: session.run(None, {name: batch})[0], runtime),
                      spec, provenance, runtime, meta)
    extra = {METADATA_KEY: ""}
    try:
        scripted = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra).eval()
    except Exception as err:  # torch raises several types for foreign files
        raise CheckpointError(f"{path}: not a readable TorchScript file ({err})") from err
    text = extra[METADATA_KEY]
    spec, provenance, meta = parse_metadata(text.decode() if isinstance(text, bytes) else text, path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return scripted(torch.from_numpy(batch)).numpy()

    return Loaded(ExportedModel(run, runtime), spec, provenance, runtime, meta)


def ready(path: str | os.PathLike, device: str = "auto", precision: str = "auto",
          threads: int | None = None) -> tuple[Loaded, torch.device, str]:
    """A model file loaded for prediction, with the device its batches go to and the resolved
    precision. Checkpoints go to `device` with autocast at `precision`; exports run in
    onnxruntime or TorchScript on the CPU (ONNX on CUDA when `device` is cuda and onnxruntime
    has the provider) at the precision they were written in."""
    from varprune.core.precision import PrecisionError, resolve
    from varprune.model.inference import pick_device

    runtime = runtime_of(path)
    if runtime == "pytorch":
        target = pick_device(device)
        return load_any(path), target, resolve(precision, target)
    if precision not in ("auto", "fp32"):
        raise PrecisionError(f"precision {precision}: {path} is an export, which runs in the precision it "
                             "was written in; give its .pt checkpoint to predict with autocast")
    if device == "cuda" and runtime == "torchscript":
        raise CheckpointError(f"{path}: TorchScript exports run on the CPU here; use the .pt checkpoint or "
                              "the ONNX export (with onnxruntime-gpu) on the GPU")
    loaded = load_any(path, threads, "cuda" if device == "cuda" else "cpu")
    return loaded, torch.device("cpu"), "fp32"
