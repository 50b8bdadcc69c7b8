"""What a model costs: parameters and MACs by two counters.

Which counter counts what:
- `params`: every parameter tensor of the model, exactly (`count_parameters`). thop's own
  parameter count misses `nn.Parameter`s used directly (the ViT's position embedding).
- `macs_thop`: thop's module hooks: Linear, Conv, norm layers... as the paper reports them. It
  does not see the attention matmuls (`torch.einsum` q·kᵀ and attn·v inside SABlock), so it
  underestimates a transformer's cost, and more so at long token sequences.
- `macs_full`: `torch.utils.flop_counter.FlopCounterMode` counts every matmul, einsum, bmm and
  convolution at the ATen level, attention included; it reports FLOPs (2 per MAC) and we
  divide by 2. It does not count elementwise work (softmax, norms, activations), and on CPU
  it counts `scaled_dot_product_attention` as 0 (MONAI's SABlock does not use that path by default).
- Latency is not here: a run's latency job (varprune.engine.latency) times every model of the run side
  by side; `cost.json` keeps only what is deterministic.
"""

from __future__ import annotations

import copy

import thop
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from varprune.model.network import ModelSpec, count_parameters, transformer_parameters
from varprune.pruning.groups import transformer_macs


def macs_thop(model: nn.Module, x: torch.Tensor) -> int:
    """MACs by thop (module hooks only); profiled on a copy, since thop adds buffers."""
    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        macs, _ = thop.profile(probe, inputs=(x,), verbose=False)
    return int(macs)


def macs_full(module: nn.Module, x: torch.Tensor) -> int:
    """MACs of every matmul/einsum/conv (FlopCounterMode FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return int(counter.get_total_flops() // 2)


def measure_cost(model: nn.Module, spec: ModelSpec) -> dict:
    """The `cost.json` record of a model: what is deterministic (parameters, MACs). Latency
    depends on what else the machine does; the run's latency job times every model side by
    side (varprune.engine.latency)."""
    model = model.eval().cpu()
    x = torch.randn(spec.input_shape(1), generator=torch.Generator().manual_seed(0))
    return {
        "params": count_parameters(model),
        "params_encoder": count_parameters(model.vit),
        "macs_thop": macs_thop(model, x),
        "macs_full": macs_full(model, x),
        "macs_full_encoder": macs_full(model.vit, x),
        # The MSA and FFN matmuls (closed form, equal to the counter): what pruning can remove.
        "macs_transformer": transformer_macs(spec),
        "params_transformer": transformer_parameters(model),
        "input_shape": list(x.shape),
        "torch": torch.__version__,
    }


def write_cost(model_path: str, out_json: str) -> dict:
    """Measure a checkpoint and write its `cost.json` atomically."""
    import logging

    from varprune.core.atomic import write_json
    from varprune.model.network import load_model

    model, spec, _ = load_model(model_path)
    record = measure_cost(model, spec)
    write_json(out_json, record)
    logging.getLogger(__name__).info(
        "%s: %d params, %.3f GMACs (thop) / %.3f GMACs (full); MSA and FFN carry %.1f %% of the MACs "
        "and %.1f %% of the params", model_path, record["params"], record["macs_thop"] / 1e9,
        record["macs_full"] / 1e9, 100 * record["macs_transformer"] / record["macs_full"],
        100 * record["params_transformer"] / record["params"])
    return record
