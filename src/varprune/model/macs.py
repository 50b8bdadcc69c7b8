"""MACs of the two segmenters in closed form, without torch (the workflow checks budgets at
parse time).

Counts the same operations as `torch.utils.flop_counter.FlopCounterMode` / 2 (matmuls and
convolutions; transposed convolutions by their input voxels; norms, activations and
interpolation are not counted): each transformer layer (`layer_macs`, the part pruning can
remove) and everything else (`rest_macs`: the patch embedding and UNETR's convolutional decoder
or SETR's upsampling head). Every function reads a model description as a plain mapping: a
`ModelSpec.to_dict()` or the `model` config slice plus `input_size`; a model pruned outside the
transformer counts with its `embed` and `head_widths`. Tested against the counter.
"""

from __future__ import annotations

from collections.abc import Mapping

from varprune.model.spec import LEGACY_SPEC, UNETR_GROUPS


def img_size(model: Mapping) -> tuple[int, ...]:
    size = model["input_size"]
    return (size, size) if model.get("spatial_dims", 2) == 2 else (model["depth"], size, size)


def width(model: Mapping) -> int:
    """The residual stream's width: `embed` once pruned (pruning.scope all), else `hidden`."""
    return model.get("embed") or model["hidden"]


def head_widths(model: Mapping) -> list[int]:
    """The decoder channel groups' widths: `head_widths` once pruned (pruning.scope decoder),
    else dense (SETR's `head_channels`, UNETR's `UNETR_GROUPS` times `feature_size`)."""
    if model.get("head_widths"):
        return list(model["head_widths"])
    if model.get("arch", LEGACY_SPEC["arch"]) == "setr":
        return list(model["head_channels"])
    return [factor * model["feature_size"] for _, factor in UNETR_GROUPS]


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
                    widths: list[int]) -> int:
    """UNETR (patch 16, res_block, conv_block): patch embedding and the convolutional
    encoders/decoder, with the channel groups at `widths` (one per `UNETR_GROUPS` entry) and the
    residual stream `hidden` wide. The residual blocks keep the structure of the dense model: a
    1x1 projection where the dense block changes the channel count (encoder1, the decoders)."""
    d = len(size)
    k, up = 3 ** d, 2 ** d
    r0 = voxels(size)
    r1, r2, r3, t = r0 // 2 ** d, r0 // 4 ** d, r0 // 8 ** d, tokens(size, 16)
    w = dict(zip((name for name, _ in UNETR_GROUPS), widths, strict=True))

    def res(voxel: int, cin: int, mid: int, cout: int, projection: bool) -> int:
        """UnetResBlock: conv1 (cin -> mid) and conv2 (mid -> cout), 3^d, plus the 1x1 projection."""
        return voxel * mid * cin * k + voxel * cout * mid * k + (voxel * cout * cin if projection else 0)

    def transp(in_voxels: int, cin: int, cout: int) -> int:
        return in_voxels * cin * cout * up

    macs = r0 * hidden * in_channels  # patch embedding, kernel and stride 16
    macs += res(r0, in_channels, w["enc1.mid"], w["enc1"], True)  # encoder1
    macs += transp(t, hidden, w["enc2.up"]) + transp(r3, w["enc2.up"], w["enc2.0"]) \
        + res(r2, w["enc2.0"], w["enc2.0.mid"], w["enc2.0"], False) + transp(r2, w["enc2.0"], w["enc2.1"]) \
        + res(r1, w["enc2.1"], w["enc2.1.mid"], w["enc2.1"], False)  # encoder2
    macs += transp(t, hidden, w["enc3.up"]) + transp(r3, w["enc3.up"], w["enc3.0"]) \
        + res(r2, w["enc3.0"], w["enc3.0.mid"], w["enc3.0"], False)  # encoder3
    macs += transp(t, hidden, w["enc4"])  # encoder4
    below, skips = hidden, {"dec5": "enc4", "dec4": "enc3.0", "dec3": "enc2.1", "dec2": "enc1"}
    for stage, voxel in zip(("dec5", "dec4", "dec3", "dec2"), (r3, r2, r1, r0), strict=True):
        upsampled = w[f"{stage}.up"]
        macs += transp(voxel // up, below, upsampled)
        macs += res(voxel, upsampled + w[skips[stage]], w[f"{stage}.mid"], w[stage], True)
        below = w[stage]
    macs += r0 * out_channels * below  # output 1x1 convolution
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
    if model.get("arch", LEGACY_SPEC["arch"]) == "unetr":
        return unetr_rest_macs(size, in_ch, out_ch, width(model), head_widths(model))
    return setr_rest_macs(size, model["patch"], in_ch, out_ch, width(model),
                          head_widths(model), model["head_kernel"],
                          len(model["head_layers"]))
