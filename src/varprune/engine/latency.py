"""Latency of every model of a run, timed side by side in one process.

Timed in a job of its own, a model's latency moved 10-25 % between jobs on a 2-core machine
(2026-12-03: dense and dense_long, the same network, read 65.1 and 58.6 ms), more than the differences
between methods at one budget. Here every model of a run is timed in the same rounds
(`time_interleaved`): each round times every model once, eager PyTorch and
onnxruntime, so a slow spell of the machine hits every model alike. A model's latency is the
median of its round medians, its spread the range of those medians; the report claims a latency
difference only beyond that spread (`varprune.study.compare.beyond_spread`).

Batch 1 on the CPU at `cost.threads`. Eager: the whole model, its encoder (patch embedding and
transformer layers) and the patch embedding alone, from which `latency_parts` gives the time of
embedding, transformer and decoder. onnxruntime: the whole model, exported in memory the way
`varprune.engine.export` writes it.
"""

from __future__ import annotations

import logging
import os
import statistics
import timeit
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from varprune.core.atomic import write_text
from varprune.engine.export import onnx_bytes
from varprune.model.deployed import onnx_session
from varprune.model.network import load_model

log = logging.getLogger(__name__)

RUNTIMES = ("eager", "onnx")
COLUMNS = ["model", "latency_ms", "latency_spread_ms", "latency_encoder_ms", "latency_embedding_ms",
           "latency_transformer_ms", "latency_decoder_ms", "latency_onnx_ms", "latency_onnx_spread_ms",
           "rounds", "runs", "threads"]


def time_ms(fn, warmup: int = 5, runs: int = 20) -> tuple[float, float]:
    """Median and inter-quartile range of `fn()` in milliseconds at the current thread count: one
    call per sample (a deployment sees the latency of one call, not the mean of a block), after
    `warmup` untimed calls. Timed by the standard library's `timeit` (garbage collection off
    while timing); torch.utils.benchmark's Timer.timeit(1) runs two untimed calls before each
    timed one, which tripled the time a latency job took."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        samples = timeit.Timer(fn).repeat(repeat=runs, number=1)
    low, median, high = np.percentile(np.array(samples) * 1000.0, [25, 50, 75])
    return float(median), float(high - low)


def time_interleaved(fns: dict, rounds: int = 3, runs: int = 20, warmup: int = 5) -> dict[object, dict]:
    """Median latency of each of `fns` timed side by side: `rounds` rounds, each timing every
    function once (`runs` calls, after a warm-up), in order. A function's latency is the median
    of its round medians and `spread_ms` the range of those medians, so a slow spell of the
    machine hits every function alike. Measured for dense and dense_long (one network): one job per
    model read them 10-25 % apart (2026-12-03); interleaved on 2026-12-04 (commit d84e0e2), 0.1 %
    apart in onnxruntime and 8.7 % in eager PyTorch, whose round medians on this 2-core VM move
    about 10 %: the spread says so."""
    for fn in fns.values():  # a throwaway pass: the first calls timed in a process read slow
        time_ms(fn, warmup, runs)
    medians: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            medians[name].append(time_ms(fn, warmup, runs)[0])
    return {name: {"median_ms": round(statistics.median(values), 3),
                   "spread_ms": round(max(values) - min(values), 3), "rounds": rounds, "runs": runs}
            for name, values in medians.items()}


def latency_parts(whole: float, encoder: float, embedding: float) -> dict[str, float]:
    """Latency per part from the medians of the whole model, the encoder (patch embedding and
    transformer layers) and the patch embedding alone: the transformer is encoder - embedding,
    the decoder (UNETR) or head (SETR) whole - encoder. Differences of medians: a part shorter
    than the timings' spread can come out slightly negative, which says it is below resolution."""
    return {"embedding": round(embedding, 3), "transformer": round(encoder - embedding, 3),
            "decoder": round(whole - encoder, 3)}


def timers(checkpoint: str | os.PathLike, runtimes: tuple[str, ...] = RUNTIMES) -> dict[str, object]:
    """part -> a function running it once at batch 1: whole, encoder and embedding (eager), onnx."""
    model, spec, _ = load_model(checkpoint)
    return model_timers(model, spec, runtimes)


def model_timers(model: torch.nn.Module, spec, runtimes: tuple[str, ...] = RUNTIMES) -> dict[str, object]:
    """`timers` for a model in memory (benchmarks time copies they pruned themselves)."""
    model = model.eval().cpu()
    x = torch.randn(spec.input_shape(1), generator=torch.Generator().manual_seed(0))
    fns: dict[str, object] = {}
    if "eager" in runtimes:
        fns["whole"] = lambda: model(x)
        fns["encoder"] = lambda: model.vit(x)
        fns["embedding"] = lambda: model.vit.patch_embedding(x)
    if "onnx" in runtimes:
        with torch.no_grad():
            session = onnx_session(onnx_bytes(model, x), threads=torch.get_num_threads())
        feed = {session.get_inputs()[0].name: x.numpy()}
        fns["onnx"] = lambda: session.run(None, feed)
    return fns


def time_models(models: Mapping[str, str | os.PathLike], threads: int = 1, rounds: int = 3, runs: int = 20,
                warmup: int = 5, runtimes: tuple[str, ...] = RUNTIMES) -> pd.DataFrame:
    """One row per model (`models`: name -> checkpoint), every model and part timed in the same
    interleaved rounds; columns `COLUMNS` (NaN for a runtime not timed)."""
    if rounds < 2:
        raise ValueError(f"cost.rounds must be at least 2 to measure a spread, got {rounds}")
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"unknown runtimes {sorted(unknown)}; choose from {', '.join(RUNTIMES)}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fns = {}
        for name, checkpoint in models.items():
            for part, fn in timers(checkpoint, runtimes).items():
                fns[(name, part)] = fn
        log.info("timing %d models (%d functions) in %d interleaved rounds of %d runs, %d threads",
                 len(models), len(fns), rounds, runs, threads)
        timing = time_interleaved(fns, rounds=rounds, runs=runs, warmup=warmup)
    finally:
        torch.set_num_threads(previous)

    def timed(name: str, part: str, key: str = "median_ms") -> float:
        return timing[(name, part)][key] if (name, part) in timing else np.nan

    rows = []
    for name in models:
        row = {"model": name, "latency_ms": timed(name, "whole"),
               "latency_spread_ms": timed(name, "whole", "spread_ms"),
               "latency_encoder_ms": timed(name, "encoder"), "latency_embedding_ms": timed(name, "embedding"),
               "latency_onnx_ms": timed(name, "onnx"),
               "latency_onnx_spread_ms": timed(name, "onnx", "spread_ms"),
               "rounds": rounds, "runs": runs, "threads": threads}
        if "eager" in runtimes:
            parts = latency_parts(row["latency_ms"], row["latency_encoder_ms"], row["latency_embedding_ms"])
            row["latency_transformer_ms"] = parts["transformer"]
            row["latency_decoder_ms"] = parts["decoder"]
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def write_latency(models: Mapping[str, str | os.PathLike], out_csv: str | os.PathLike,
                  settings: Mapping) -> pd.DataFrame:
    """Time the run's models (`settings`: the `cost` config slice) and write latency.csv atomically."""
    table = time_models(models, threads=settings["threads"], rounds=settings["rounds"], runs=settings["runs"],
                        warmup=settings["warmup"], runtimes=tuple(settings["runtimes"]))
    write_text(out_csv, table.to_csv(index=False))
    for row in table.itertuples():
        log.info("%s: %.2f ms eager (spread %.2f), %.2f ms onnxruntime (spread %.2f)", row.model,
                 row.latency_ms, row.latency_spread_ms, row.latency_onnx_ms, row.latency_onnx_spread_ms)
    return table
