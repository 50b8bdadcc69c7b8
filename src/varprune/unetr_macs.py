"""MACs of MONAI's UNETR in closed form, without torch (the workflow checks budgets at parse time).

Counts the same operations as `torch.utils.flop_counter.FlopCounterMode` / 2 (matmuls and
convolutions; transposed convolutions by their input voxels), for `res_block=True`,
`conv_block=True`, patch 16, no class token: the patch embedding, the decoder's convolutions
(`rest_macs`) and each transformer layer (`layer_macs`). Tested against the counter.
"""

from __future__ import annotations

PATCH = 16


def voxels(img_size: tuple[int, ...]) -> int:
    total = 1
    for size in img_size:
        total *= size
    return total


def tokens(img_size: tuple[int, ...]) -> int:
    return voxels(img_size) // PATCH ** len(img_size)


def layer_macs(img_size: tuple[int, ...], hidden: int, inner: int, ffn: int) -> int:
    """q, k, v and output projections, q·kᵀ and attention·v, and the two FFN matmuls."""
    n = tokens(img_size)
    return inner * (4 * n * hidden + 2 * n * n) + ffn * 2 * n * hidden


def rest_macs(img_size: tuple[int, ...], in_channels: int, out_channels: int, hidden: int,
              feature_size: int) -> int:
    """Everything but the transformer layers: patch embedding and the convolutional decoder."""
    d = len(img_size)
    k, up = 3 ** d, 2 ** d
    r0 = voxels(img_size)
    r1, r2, r3, t = r0 // 2 ** d, r0 // 4 ** d, r0 // 8 ** d, tokens(img_size)
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
