"""Export a checkpoint to ONNX or TorchScript, checked against PyTorch; and `inspect` a checkpoint.

The export is verified by the command itself: the exported model (onnxruntime on the CPU for
ONNX, torch.jit.load for TorchScript) must give the PyTorch output within 1e-4 (times the
largest output magnitude when above 1) on random inputs of the model's shape, at batch 1 and at
a larger batch (the batch axis is dynamic), else the file is not kept. A pruned model exports
with its per-layer widths, so its file is smaller. Every export carries the model spec and the
checkpoint's provenance (`varprune.model.deployed`), so `varprune predict` runs it like the checkpoint.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import torch

from varprune.core.atomic import atomic_path
from varprune.model.deployed import METADATA_KEY, metadata, with_onnx_metadata
from varprune.model.network import ModelSpec, count_parameters, load_model

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


class ExportError(Exception):
    """The export failed or does not reproduce the PyTorch model."""


def onnx_bytes(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    """The model as an ONNX file in memory (opset 17, dynamic batch): what `export` writes and
    what the benchmarks time in onnxruntime."""
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["ct"],
                      output_names=["logits"], dynamic_axes={"ct": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def torchscript_bytes(model: torch.nn.Module, x: torch.Tensor, meta: str | None = None) -> bytes:
    """The model traced to TorchScript, in memory (with `meta` as its varprune extra file)."""
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_KEY: meta} if meta else None)
    return buffer.getvalue()


def export_bytes(model: torch.nn.Module, spec: ModelSpec, provenance: dict, fmt: str) -> bytes:
    """The export of `fmt` in memory, with its metadata (spec and provenance)."""
    x = torch.rand(spec.input_shape(1), generator=torch.Generator().manual_seed(0))
    meta = metadata(spec, provenance)
    if fmt == "onnx":
        return with_onnx_metadata(onnx_bytes(model, x), meta)
    return torchscript_bytes(model, x, meta)


def runner(fmt: str, data: bytes, threads: int | None = None):
    """A function batch(np.float32) -> np.ndarray for an exported model."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(None, {"ct": batch})[0]
    scripted = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()

    def run(batch):
        with torch.inference_mode():
            return scripted(torch.from_numpy(batch)).numpy()

    return run


def max_difference(model: torch.nn.Module, run, shape: tuple[int, ...], seed: int = 0) -> tuple[float, float]:
    """(largest absolute difference between PyTorch and the export on random inputs, the
    largest difference allowed there): `TOLERANCE` times the largest output magnitude when that
    exceeds 1, since float32 rounding grows with the values (logits of 7-11 gave differences of
    1e-4 to 1.7e-4 in onnxruntime, a relative 2e-5)."""
    worst, scale = 0.0, 1.0
    for batch in (1, 3):
        x = torch.rand((batch, *shape[1:]), generator=torch.Generator().manual_seed(seed + batch))
        with torch.inference_mode():
            expected = model(x).numpy()
        got = run(x.numpy())
        worst = max(worst, float(np.abs(expected - got).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return worst, TOLERANCE * scale


def export_model(model_path: str | os.PathLike, fmt: str, output: str | os.PathLike) -> dict:
    """Export and verify; the file appears only when it reproduces the model."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model, spec, provenance = load_model(model_path)
    model = model.eval().cpu()
    try:
        data = export_bytes(model, spec, provenance, fmt)
    except Exception as err:  # exporters raise many types
        raise ExportError(f"{model_path}: {fmt} export failed: {err}") from err
    difference, allowed = max_difference(model, runner(fmt, data), spec.input_shape(1))
    if not difference <= allowed:
        raise ExportError(f"{model_path}: the {fmt} export differs from PyTorch by {difference:.2e} "
                          f"(> {allowed:.2g}: {TOLERANCE:g} times the outputs' scale); not written")
    with atomic_path(output) as tmp:
        Path(tmp).write_bytes(data)
    log.info("%s -> %s (%s, %.1f MB, max difference %.1e)", model_path, output, fmt, len(data) / 1e6,
             difference)
    return {"format": fmt, "bytes": len(data), "max_abs_difference": difference,
            "params": count_parameters(model)}


def describe(model_path: str | os.PathLike, with_macs: bool = True) -> str:
    """What `varprune inspect` prints: spec per layer, size, MACs (both counters), provenance."""
    from varprune.engine.cost import macs_full, macs_thop
    from varprune.model.network import describe_arch, transformer_parameters
    from varprune.pruning.groups import transformer_macs

    model, spec, provenance = load_model(model_path)
    params = count_parameters(model)
    lines = [f"checkpoint {model_path}", f"model: {describe_arch(spec)}",
             f"params: {params:,} (MSA and FFN: {transformer_parameters(model) / params:.1%})"]
    if with_macs:
        x = torch.zeros(spec.input_shape(1))
        full = macs_full(model, x)
        lines.append(f"MACs: {full / 1e9:.3f} G full (FlopCounterMode, attention included; MSA and FFN: "
                     f"{transformer_macs(spec) / full:.1%}), {macs_thop(model, x) / 1e9:.3f} G thop")
    if spec.arch == "setr":
        lines.append(f"embedding width: {spec.width} of {spec.hidden}; head stages: "
                     f"{'->'.join(map(str, spec.stages))} of {'->'.join(map(str, spec.head_channels))}")
    elif spec.head_widths is not None or spec.embed is not None:
        groups = ", ".join(f"{name} {now}/{dense}" for name, now, dense
                           in zip(spec.stage_names, spec.stages, spec.dense_stages, strict=True))
        lines.append(f"embedding width: {spec.width} of {spec.hidden}; decoder channels kept: {groups}")
    lines.append("layer  heads  head_dim  msa_channels  ffn  softmax_scale")
    for i, layer in enumerate(spec.layers, start=1):
        lines.append(f"{i:>5}  {layer.heads:>5}  {layer.head_dim:>8}  {layer.inner:>12}  {layer.ffn:>4}  "
                     f"{layer.scale:.4f}")
    kind = provenance.get("kind", "unknown")
    lines.append(f"kind: {kind}" + (f", method {provenance.get('method')}, cycle {provenance.get('cycle')}"
                                     if kind == "pruned" else ""))
    if provenance.get("parent"):
        lines.append(f"parent: {provenance['parent']}")
    if "pruning" in provenance:
        p = provenance["pruning"]
        lines.append(f"MACs removed vs dense: {100 * p['reduction_vs_dense']:.1f} % (target "
                     f"{100 * p['target']:.1f} %)")
    training = provenance.get("training", {})
    if training:
        lines.append(f"training: best epoch {training.get('best_epoch')}, val Dice "
                     f"{training.get('best_val_dice', float('nan')):.4f}, device {training.get('device')}")
    prep = provenance.get("config", {}).get("preprocess")
    lines.append(f"preprocessing: {prep}" if prep else "preprocessing: not recorded (predict will refuse it)")
    split = provenance.get("split")
    if split:
        lines.append(f"data split: train {split.get('train')}, val {split.get('val')}, "
                     f"test {split.get('test')}")
    return "\n".join(lines)
