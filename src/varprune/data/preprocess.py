"""Turn a converted case into model-ready arrays, and map predictions back onto the CT grid.

Per case: reorient the CT and mask to one canonical orientation (`orientation`, DICOM
letters, LPS by default: the way IRCADb and most DICOM CTs are stored), so that the model sees
the patient the same way whatever the file's layout (a RAS NIfTI is a mirrored array otherwise);
find the body, take a square in-plane field of view around it, resample the CT and
the liver mask onto a `input_size` x `input_size` grid (at `spacing_mm`, or fitted to the body
when `spacing_mm` is None), clip to the HU window and scale to [0, 1]. Slices are kept as they
are along z, so the saved (slices, H, W) array is the stack of slices a 2D model reads and the
volume a 3D model reads. The reference geometry saved with it maps any prediction back onto
the original NIfTI grid (`to_original_grid`), which evaluation and `varprune predict` use.

`.npz` contents: `image` float32 (S, H, W) in [0, 1], canonical orientation; `label` uint8
(S, H, W); `origin`, `spacing`, `direction`, `size` of the reference grid (SimpleITK x, y, z
order); `source_size`, `source_spacing`, `source_origin`, `source_direction` of the CT as
stored (before reorientation); `window`; `case`.

Memory: a LiTS-sized CT (512 x 512 x 1000 int16, V = 500 MiB) is preprocessed in about
3.5 V above the interpreter (benchmarks/large_case.py; 7.5 V before): the body box is found
slab by slab (SLAB_SLICES slices at a time) instead of labelling the whole volume, the
in-plane smoothing runs slab by slab into one float32 volume, the mask is resampled without a
float copy, an axial CT is reoriented by one flip, and the CT as stored is released once
reoriented. Each of these gives the same arrays as the whole-volume computation, bit for bit
(tests/test_large_volume.py). The peak is the int16 CT plus its float32 smoothed copy (3 V):
the resampling stays one call on the whole volume, as a slab of the grid would have another
origin, whose rounding moves the sample points by ~1e-13 voxel and can change the last bit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.core.atomic import atomic_path
from varprune.data.itkerror import itk_reason

log = logging.getLogger(__name__)

SLAB_SLICES = 32  # slices per slab where a step runs slab by slab (the body box, the smoothing)
CHUNK_VOXELS = 2**23  # voxels per chunk where a whole-volume test is counted chunk by chunk


class PreprocessError(Exception):
    """A case cannot be preprocessed; the message names the file."""


@dataclass(frozen=True)
class PreprocessSpec:
    """The preprocess slice of the config."""

    window: tuple[float, float] = (-100.0, 400.0)
    spacing_mm: float | None = 3.0
    input_size: int = 128
    body_threshold_hu: float = -500.0
    margin_mm: float = 10.0
    orientation: str = "LPS"

    def __post_init__(self) -> None:
        if not is_orientation(self.orientation):
            raise ValueError(f"preprocess.orientation must be three DICOM letters, one of L/R, one of "
                             f"P/A and one of S/I (e.g. LPS), got {self.orientation!r}")
        low, high = self.window
        if low >= high:
            raise ValueError(f"preprocess.window: low ({low}) must be below high ({high})")
        if self.input_size < 16:
            raise ValueError(f"preprocess.input_size must be >= 16, got {self.input_size}")
        if self.spacing_mm is not None and self.spacing_mm <= 0:
            raise ValueError(f"preprocess.spacing_mm must be > 0, got {self.spacing_mm}")

    @classmethod
    def from_config(cls, cfg: dict) -> PreprocessSpec:
        return cls(
            window=tuple(cfg["window"]),
            spacing_mm=cfg.get("spacing_mm"),
            input_size=int(cfg["input_size"]),
            body_threshold_hu=float(cfg.get("body_threshold_hu", -500.0)),
            margin_mm=float(cfg.get("margin_mm", 10.0)),
            # Checkpoints written before the key existed were trained on LPS-stored CTs.
            orientation=str(cfg.get("orientation", "LPS")),
        )


def is_orientation(code: str) -> bool:
    """Three DICOM orientation letters naming each axis once (LPS, RAS, ...)."""
    return (isinstance(code, str) and len(code) == 3
            and all(sum(letter in pair for letter in code) == 1 for pair in ("LR", "PA", "SI")))


def canonical(image: sitk.Image, orientation: str = "LPS") -> sitk.Image:
    """`image` with its axes permuted and flipped to `orientation` (the voxels stay where they
    are in physical space; only the array layout changes)."""
    if image.GetDimension() != 3:
        return image
    # DICOMOrient permutes the axes, then flips them: two whole-volume copies alive at once. When
    # the permutation is the identity (every axial CT) flipping alone gives the same image (the
    # same filter on the same input: an identity permutation copies the geometry as it is) with
    # one copy. The permutation and flips depend on the direction only: found on a 1-voxel image.
    probe = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    probe.SetDirection(image.GetDirection())
    orient = sitk.DICOMOrientImageFilter()
    orient.SetDesiredCoordinateOrientation(orientation)
    orient.Execute(probe)
    if tuple(orient.GetPermuteOrder()) == (0, 1, 2):
        return sitk.Flip(image, orient.GetFlipAxes(), flipAboutOrigin=False)
    return sitk.DICOMOrient(image, orientation)


def _slabs(slices: int, slab: int, minimum: int = 1) -> list[tuple[int, int]]:
    """[z0, z1) ranges of `slab` slices covering `slices`, each at least `minimum` long (a
    short last one joins the one before; fewer than `minimum` slices in all make one range)."""
    slab = max(int(slab), minimum, 1)
    starts = list(range(0, slices, slab))
    if len(starts) > 1 and slices - starts[-1] < minimum:
        starts.pop()
    return [(z0, starts[i + 1] if i + 1 < len(starts) else slices) for i, z0 in enumerate(starts)]


def body_box(ct: sitk.Image, threshold_hu: float) -> tuple[float, float, float, float]:
    """In-plane bounding box (x0, x1, y0, y1, voxel indices) of the largest component above `threshold_hu`.

    Components are face-connected (ConnectedComponent's default); of equal-sized ones the first
    in raster order wins (RelabelComponent's order). A 3D volume is labelled SLAB_SLICES slices
    at a time and the pieces are joined across slab borders, which gives the same components
    as labelling it whole with a fraction of the memory (a whole-volume label image is uint32)."""
    if ct.GetDimension() != 3:
        body = ct > threshold_hu
        largest = sitk.RelabelComponent(sitk.ConnectedComponent(body), sortByObjectSize=True) == 1
        mask = sitk.GetArrayViewFromImage(largest)
        if not mask.any():
            raise PreprocessError(f"no voxel above {threshold_hu} HU: is this a CT in HU?")
        ys = np.flatnonzero(mask.any(axis=(0, 2)))
        xs = np.flatnonzero(mask.any(axis=(0, 1)))
        return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])
    from scipy.ndimage import find_objects
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    sizes, boxes, joins = [], [], []  # per piece (a component of one slab), in raster order
    last = None  # the previous slab's last slice of piece ids (0: background)
    pieces = 0
    for z0, z1 in _slabs(ct.GetSize()[2], SLAB_SLICES):
        labels = sitk.ConnectedComponent(ct[:, :, z0:z1] > threshold_hu)  # labels in raster order
        ids = sitk.GetArrayViewFromImage(labels)  # (z, y, x)
        count = int(ids.max())
        sizes.append(np.bincount(ids.ravel(), minlength=count + 1)[1:])
        boxes += [(box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1) for box in find_objects(ids)]
        first = np.where(ids[0] > 0, ids[0].astype(np.int64) + pieces, 0)
        if last is not None:
            touching = (last > 0) & (first > 0)  # face neighbours across the slab border
            joins.append(np.unique(np.stack([last[touching], first[touching]]), axis=1))
        last = np.where(ids[-1] > 0, ids[-1].astype(np.int64) + pieces, 0)
        pieces += count
        del ids, labels
    if pieces == 0:
        raise PreprocessError(f"no voxel above {threshold_hu} HU: is this a CT in HU?")
    pairs = np.concatenate(joins, axis=1) - 1 if joins else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), shape=(pieces, pieces))
    _, component = connected_components(graph, directed=False)
    size = np.bincount(component, weights=np.concatenate(sizes).astype(np.float64))
    # Pieces are numbered in raster order, so a component's first piece is where it starts.
    start = np.full(size.shape, pieces)
    np.minimum.at(start, component, np.arange(pieces))
    best = min(range(len(size)), key=lambda c: (-size[c], start[c]))
    box = np.asarray(boxes)[component == best]
    return float(box[:, 0].min()), float(box[:, 1].max()), float(box[:, 2].min()), float(box[:, 3].max())


def reference_grid(ct: sitk.Image, spec: PreprocessSpec) -> sitk.Image:
    """The square model grid around the body, in the CT's physical frame."""
    sx, sy, _ = ct.GetSpacing()
    x0, x1, y0, y1 = body_box(ct, spec.body_threshold_hu)
    if spec.spacing_mm is not None:
        side_mm = spec.input_size * spec.spacing_mm
        body_mm = max((x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy)
        if body_mm > side_mm:
            log.warning("the body (%.0f mm) is wider than the field of view %d x %.2f mm: edges are cut",
                        body_mm, spec.input_size, spec.spacing_mm)
    else:
        side_mm = max((x1 - x0 + 1) * sx, (y1 - y0 + 1) * sy) + 2 * spec.margin_mm
    step = side_mm / spec.input_size
    # Continuous index of the first reference voxel's centre, centred on the body box.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    first = (cx - side_mm / (2 * sx) + 0.5 * step / sx, cy - side_mm / (2 * sy) + 0.5 * step / sy, 0.0)
    ref = sitk.Image(spec.input_size, spec.input_size, ct.GetSize()[2], sitk.sitkFloat32)
    ref.SetSpacing((step, step, ct.GetSpacing()[2]))
    ref.SetDirection(ct.GetDirection())
    ref.SetOrigin(ct.TransformContinuousIndexToPhysicalPoint(first))
    return ref


def _antialias(image: sitk.Image, step: float) -> sitk.Image:
    """`image` as float32, smoothed in-plane before downsampling so that noise does not alias
    into the small grid.

    A volume of 4 slices or more is smoothed SLAB_SLICES slices at a time (at least 4: the
    recursive filter needs 4 voxels along every axis) into one float32 volume, which holds the
    same values as smoothing it whole: the sigma along z, 1e-3 of a slice, gives the recursive
    filter coefficients exp(-1.7 / 1e-3) = 0.0 exactly for every neighbouring slice, so each
    slice is only scaled by its own coefficient, inside a slab as in the whole volume."""
    sx, sy, sz = image.GetSpacing()
    if step <= 1.2 * min(sx, sy):
        return sitk.Cast(image, sitk.sitkFloat32)
    sigma = 0.5 * np.sqrt(max(step**2 - sx**2, 0.0))
    slices = image.GetSize()[2]
    if slices < 4:  # the recursive filter needs 4 voxels along every axis: slice by slice
        image = sitk.Cast(image, sitk.sitkFloat32)
        smoothed = sitk.JoinSeries([sitk.SmoothingRecursiveGaussian(image[:, :, k], sigma=(sigma, sigma))
                                    for k in range(slices)])
        smoothed.CopyInformation(image)
        return smoothed
    smoothed = sitk.Image(image.GetSize(), sitk.sitkFloat32)
    smoothed.CopyInformation(image)
    for z0, z1 in _slabs(slices, SLAB_SLICES, minimum=4):
        slab = sitk.Cast(image[:, :, z0:z1], sitk.sitkFloat32)
        # Pasted in place: the float32 volume is the only whole-volume copy.
        smoothed[:, :, z0:z1] = sitk.SmoothingRecursiveGaussian(slab, sigma=(sigma, sigma, 1e-3 * sz))
    return smoothed


# Pixel types whose values float32 holds exactly: resampling them directly (the interpolator
# reads every pixel as a double) gives what resampling their float32 cast gives, without the copy.
_EXACT_IN_FLOAT32 = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkFloat32}


def preprocess_arrays(ct: sitk.Image, liver: sitk.Image, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Reorient, resample, window and normalise one case; return the arrays of the .npz.

    The source geometry saved is the CT's own, so `to_original_grid` lands on the input grid."""
    images = [ct, liver]
    del ct, liver
    return _preprocess(images, spec)


def _preprocess(images: list[sitk.Image], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """`preprocess_arrays` of `images` = [ct, liver], which it empties: once reoriented, the
    images as stored are released unless the caller holds them too."""
    ct, liver = images
    images.clear()
    source = {"source_size": np.asarray(ct.GetSize()), "source_spacing": np.asarray(ct.GetSpacing()),
              "source_origin": np.asarray(ct.GetOrigin()), "source_direction": np.asarray(ct.GetDirection())}
    ct = canonical(ct, spec.orientation)
    liver = canonical(liver, spec.orientation)
    ref = reference_grid(ct, spec)
    if liver.GetPixelID() not in _EXACT_IN_FLOAT32:
        liver = sitk.Cast(liver, sitk.sitkFloat32)
    label = sitk.Resample(liver, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    del liver
    ct = _antialias(ct, ref.GetSpacing()[0])
    image = sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    del ct
    low, high = spec.window
    hu = sitk.GetArrayFromImage(image)
    return {
        "image": ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32),
        "label": (sitk.GetArrayFromImage(label) >= 0.5).astype(np.uint8),
        "origin": np.asarray(ref.GetOrigin()),
        "spacing": np.asarray(ref.GetSpacing()),
        "direction": np.asarray(ref.GetDirection()),
        "size": np.asarray(ref.GetSize()),
        **source,
        "window": np.asarray(spec.window, dtype=np.float64),
    }


NONFINITE_LIMIT = 0.001  # share of NaN/inf voxels refused; a smaller trace becomes air, with a warning


def finite_ct(ct: sitk.Image, source: str) -> sitk.Image:
    """Refuse a CT with more than a trace of NaN/inf voxels (a NaN compares false with every
    threshold, so it would silently become tissue or air); replace a trace by air, warning."""
    values = sitk.GetArrayViewFromImage(ct)
    if np.issubdtype(values.dtype, np.integer):
        return ct
    bad = ~np.isfinite(values)
    share = float(bad.mean())
    if share == 0:
        return ct
    if share > NONFINITE_LIMIT:
        raise PreprocessError(f"{source}: {share:.1%} of the voxels are NaN or infinite "
                              f"(more than {NONFINITE_LIMIT:.1%}): not a usable CT")
    log.warning("%s: %d NaN/infinite voxel(s) (%.3f%%) replaced by air (-1024 HU)", source, int(bad.sum()),
                100 * share)
    fixed = sitk.GetImageFromArray(np.where(bad, -1024.0, values).astype(np.float32))
    fixed.CopyInformation(ct)
    return fixed


AIR_HU = -500.0  # every CT in HU has air (about -1000) around or inside the body
AIR_RANGE = (-1200.0, AIR_HU)  # below it: padding values outside the scan circle (-2000, -3024)
AIR_SHARE = 0.001  # share of voxels in AIR_RANGE a CT in HU has at least


def has_air(values: np.ndarray) -> bool:
    """Whether at least AIR_SHARE of the voxels lie in AIR_RANGE (air in HU).

    Counted a few million voxels at a time (no whole-volume boolean temporaries); the share is
    the exact count over the size, as np.mean of the boolean volume gives it."""
    low, high = AIR_RANGE
    values = np.atleast_1d(values)
    if values.size == 0:
        return False  # the mean of nothing is NaN, which is below any share
    rows = max(1, CHUNK_VOXELS // max(1, values[0].size))
    count = 0
    for i in range(0, len(values), rows):
        part = values[i:i + rows]
        count += int(np.count_nonzero((part >= low) & (part <= high)))
    return count / values.size >= AIR_SHARE


def check_hu_range(ct: sitk.Image, source: str) -> None:
    """Refuse a volume with no air: stored values without their rescale, or NaN that a reader
    turned into 0 (ITK's NIfTI reader does), would otherwise be segmented as if they were HU."""
    values = sitk.GetArrayViewFromImage(ct)
    if not has_air(values):
        low, high = AIR_RANGE
        raise PreprocessError(f"{source}: fewer than {AIR_SHARE:.1%} of the voxels between {low:.0f} and "
                              f"{high:.0f} HU (lowest {float(np.min(values)):.0f}): no air, so this is not "
                              "a CT in HU (values without their rescale, or NaN read as 0?)")


def read_image(path: str | os.PathLike, what: str) -> sitk.Image:
    """Read a NIfTI or fail naming the file."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise PreprocessError(f"{what}: cannot read {path} ({itk_reason(err)})") from err


def preprocess_case(ct_path: str | os.PathLike, liver_path: str | os.PathLike, case: str,
                    spec: PreprocessSpec, out_npz: str | os.PathLike,
                    assume_hu: bool = False) -> dict[str, np.ndarray]:
    """Preprocess one converted case into `out_npz` (written atomically); `assume_hu` skips the
    check that the CT has air (data.assume_hu: the user vouches for the values)."""
    ct = finite_ct(read_image(ct_path, case), f"{case}: {ct_path}")
    if not assume_hu:
        check_hu_range(ct, f"{case}: {ct_path}")
    from varprune.data import plausibility  # it builds on this module's body box

    plausibility.report(plausibility.check_ct(ct, spec.body_threshold_hu), f"{case}: {ct_path}")
    liver = read_image(liver_path, case)
    if ct.GetSize() != liver.GetSize():
        raise PreprocessError(f"{case}: {liver_path} is {liver.GetSize()}, the CT {ct.GetSize()}")
    images = [ct, liver]
    del ct, liver  # _preprocess releases the CT as stored once it is reoriented
    arrays = _preprocess(images, spec)
    arrays["case"] = np.asarray(case)
    with atomic_path(out_npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    log.info("%s: %s slices at %.2f mm, liver in %d slices", case, arrays["image"].shape[0],
             float(arrays["spacing"][0]), int(arrays["label"].any(axis=(1, 2)).sum()))
    return arrays


def to_original_grid(prediction: np.ndarray, grid: dict[str, np.ndarray],
                     interpolate: bool = True) -> sitk.Image:
    """Map a prediction on the model grid (S, H, W; probabilities or labels) onto the CT grid.

    With `interpolate`, probabilities are resampled linearly and thresholded at 0.5, which
    gives smoother contours than nearest-neighbour upsampling of a label map.
    """
    pred = sitk.GetImageFromArray(prediction.astype(np.float32))
    pred.SetOrigin(tuple(float(v) for v in grid["origin"]))
    pred.SetSpacing(tuple(float(v) for v in grid["spacing"]))
    pred.SetDirection(tuple(float(v) for v in grid["direction"]))
    method = sitk.sitkLinear if interpolate else sitk.sitkNearestNeighbor
    # The CT grid given by its geometry, not by a reference image: no CT-sized buffer to allocate.
    # The float32 result (twice an int16 CT) lives until thresholded: evaluation's peak.
    resampled = sitk.Resample(pred, [int(v) for v in grid["source_size"]], sitk.Transform(), method,
                              tuple(float(v) for v in grid["source_origin"]),
                              tuple(float(v) for v in grid["source_spacing"]),
                              tuple(float(v) for v in grid["source_direction"]), 0.0, sitk.sitkFloat32)
    return resampled >= 0.5  # uint8 0/1 on the CT grid


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a preprocessed case, failing with the file name when it is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise PreprocessError(f"cannot read preprocessed case {path}: {err}") from err
