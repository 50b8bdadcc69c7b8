"""MACs of the two segmenters in closed form, without torch (the workflow checks budgets at
parse time).

Counts the same operations as `torch.utils.flop_counter.FlopCounterMode` / 2 (matmuls and
convolutions; transposed convolutions by their input voxels; norms, activations and
interpolation are not counted): each transformer layer (`layer_macs`, the part pruning can
remove) and everything else (`rest_macs`: the patch embedding and UNETR's convolutional decoder
or SETR's upsampling head). Every function reads a model description as a plain mapping: a
`ModelSpec.to_dict()` or the `model` config slice plus `input_size`; a SETR pruned outside the
transformer counts with its `embed` and `head_widths`. Tested against the counter.
"""

from __future__ import annotations

from collections.abc import Mapping


def img_size(model: Mapping) -> tuple[int, ...]:
    size = model["input_size"]
    return (size, size) if model.get("spatial_dims", 2) == 2 else (model["depth"], size, size)


def width(model: Mapping) -> int:
    """The residual stream's width: `embed` once pruned (pruning.scope all), else `hidden`."""
    return model.get("embed") or model["hidden"]


def head_widths(model: Mapping) -> list[int]:
    """SETR's head stage widths: `head_widths` once pruned (pruning.scope decoder), else dense."""
    return list(model.get("head_widths") or model["head_channels"])


def voxels(size: tuple[int, ...]) -> int:
    total = 1
    for side in size:
        total *= side
    return total


def tokens(size: tuple[int, ...], patch: int) -> int:
    """Patch tokens the transformer sees (no class token in either segmenter)."""
    return voxels(size) // patch ** len(size)


def msa_channel_macs(size: tuple[int, ...], patch: int, hidden: int) -> int:
    """One MSA head-dimension channel: its q, k and v rows and out_proj column (4·n·hidden),
    and its term in q·kᵀ and in attention·v (2·n²)."""
    n = tokens(size, patch)
    return 4 * n * hidden + 2 * n * n


def ffn_channel_macs(size: tuple[int, ...], patch: int, hidden: int) -> int:
    """One FFN channel: a row of linear1 and a column of linear2."""
    return 2 * tokens(size, patch) * hidden


def layer_macs(size: tuple[int, ...], patch: int, hidden: int, inner: int, ffn: int) -> int:
    """q, k, v and output projections, q·kᵀ and attention·v, and the two FFN matmuls."""
    return inner * msa_channel_macs(size, patch, hidden) + ffn * ffn_channel_macs(size, patch, hidden)


def model_macs(model: Mapping, layers: list[tuple[int, int]]) -> int:
    """The whole model: `rest_macs` plus every layer, given as (inner, ffn) widths."""
    size = img_size(model)
    return rest_macs(model) + sum(layer_macs(size, model["patch"], width(model), inner, ffn)
                                  for inner, ffn in layers)


def unetr_rest_macs(size: tuple[int, ...], in_channels: int, out_channels: int, hidden: int,
                    feature_size: int) -> int:
    """UNETR (patch 16, res_block, conv_block): patch embedding and the convolutional decoder."""
    d = len(size)
    k, up = 3 ** d, 2 ** d
    r0 = voxels(size)
    r1, r2, r3, t = r0 // 2 ** d, r0 // 4 ** d, r0 // 8 ** d, tokens(size, 16)
    f = feature_size

    def res(voxel: int, cin: int, cout: int) -> int:
        """UnetResBlock: two 3^d convolutions, plus a 1x1 projection when channels change."""
        return voxel * cout * cin * k + voxel * cout * cout * k + (voxel * cout * cin if cin != cout else 0)

    def transp(in_voxels: int, cin: int, cout: int) -> int:
        return in_voxels * cin * cout * up

    macs = r0 * hidden * in_channels  # patch embedding, kernel and stride 16
    macs += res(r0, in_channels, f)  # encoder1
    macs += transp(t, hidden, 2 * f) + transp(r3, 2 * f, 2 * f) + res(r2, 2 * f, 2 * f) \
        + transp(r2, 2 * f, 2 * f) + res(r1, 2 * f, 2 * f)  # encoder2
    macs += transp(t, hidden, 4 * f) + transp(r3, 4 * f, 4 * f) + res(r2, 4 * f, 4 * f)  # encoder3
    macs += transp(t, hidden, 8 * f)  # encoder4
    macs += transp(t, hidden, 8 * f) + res(r3, 16 * f, 8 * f)  # decoder5
    macs += transp(r3, 8 * f, 4 * f) + res(r2, 8 * f, 4 * f)  # decoder4
    macs += transp(r2, 4 * f, 2 * f) + res(r1, 4 * f, 2 * f)  # decoder3
    macs += transp(r1, 2 * f, f) + res(r0, 2 * f, f)  # decoder2
    macs += r0 * out_channels * f  # output 1x1 convolution
    return macs


def setr_rest_macs(size: tuple[int, ...], patch: int, in_channels: int, out_channels: int,
                   hidden: int, head_channels: list[int], head_kernel: int, head_inputs: int) -> int:
    """SETR-PUP: patch embedding, then per stage a k^d convolution at the current grid followed
    by a x2 upsampling (not counted), and a 1x1 convolution to the classes at full resolution."""
    d = len(size)
    r0 = voxels(size)
    macs = r0 * hidden * in_channels  # patch embedding, kernel and stride = patch
    grid, cin = tokens(size, patch), hidden * head_inputs
    for cout in head_channels:
        macs += grid * cin * cout * head_kernel ** d
        grid, cin = grid * 2 ** d, cout
    return macs + r0 * cin * out_channels


def rest_macs(model: Mapping) -> int:
    """MACs outside the transformer layers of the model `model` describes."""
    size = img_size(model)
    in_ch, out_ch = model.get("in_channels", 1), model.get("out_channels", 2)
    if model.get("arch", "unetr") == "unetr":
        return unetr_rest_macs(size, in_ch, out_ch, model["hidden"], model["feature_size"])
    return setr_rest_macs(size, model["patch"], in_ch, out_ch, width(model),
                          head_widths(model), model["head_kernel"],
                          len(model["head_layers"]))
