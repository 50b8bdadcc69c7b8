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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.atomic import atomic_path

log = logging.getLogger(__name__)


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
    return sitk.DICOMOrient(image, orientation)


def body_box(ct: sitk.Image, threshold_hu: float) -> tuple[float, float, float, float]:
    """In-plane bounding box (x0, x1, y0, y1, voxel indices) of the largest component above `threshold_hu`."""
    body = ct > threshold_hu
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(body), sortByObjectSize=True) == 1
    mask = sitk.GetArrayViewFromImage(largest)
    if not mask.any():
        raise PreprocessError(f"no voxel above {threshold_hu} HU: is this a CT in HU?")
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    return float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])


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
    """Smooth in-plane before downsampling so that noise does not alias into the small grid."""
    sx, sy, _ = image.GetSpacing()
    if step <= 1.2 * min(sx, sy):
        return image
    sigma = 0.5 * np.sqrt(max(step**2 - sx**2, 0.0))
    if image.GetSize()[2] < 4:  # the recursive filter needs 4 voxels along every axis: slice by slice
        smoothed = sitk.JoinSeries([sitk.SmoothingRecursiveGaussian(image[:, :, k], sigma=(sigma, sigma))
                                    for k in range(image.GetSize()[2])])
        smoothed.CopyInformation(image)
        return smoothed
    return sitk.SmoothingRecursiveGaussian(image, sigma=(sigma, sigma, 1e-3 * image.GetSpacing()[2]))


def preprocess_arrays(ct: sitk.Image, liver: sitk.Image, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Reorient, resample, window and normalise one case; return the arrays of the .npz.

    The source geometry saved is the CT's own, so `to_original_grid` lands on the input grid."""
    source = ct
    ct, liver = canonical(ct, spec.orientation), canonical(liver, spec.orientation)
    ref = reference_grid(ct, spec)
    ct_f = _antialias(sitk.Cast(ct, sitk.sitkFloat32), ref.GetSpacing()[0])
    image = sitk.Resample(ct_f, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    label = sitk.Resample(sitk.Cast(liver, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear,
                          0.0, sitk.sitkFloat32)
    low, high = spec.window
    hu = sitk.GetArrayFromImage(image)
    return {
        "image": ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32),
        "label": (sitk.GetArrayFromImage(label) >= 0.5).astype(np.uint8),
        "origin": np.asarray(ref.GetOrigin()),
        "spacing": np.asarray(ref.GetSpacing()),
        "direction": np.asarray(ref.GetDirection()),
        "size": np.asarray(ref.GetSize()),
        "source_size": np.asarray(source.GetSize()),
        "source_spacing": np.asarray(source.GetSpacing()),
        "source_origin": np.asarray(source.GetOrigin()),
        "source_direction": np.asarray(source.GetDirection()),
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
    """Whether at least AIR_SHARE of the voxels lie in AIR_RANGE (air in HU)."""
    low, high = AIR_RANGE
    return float(np.mean((values >= low) & (values <= high))) >= AIR_SHARE


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
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PreprocessError(f"{what}: cannot read {path} ({reason})") from err


def preprocess_case(ct_path: str | os.PathLike, liver_path: str | os.PathLike, case: str,
                    spec: PreprocessSpec, out_npz: str | os.PathLike,
                    assume_hu: bool = False) -> dict[str, np.ndarray]:
    """Preprocess one converted case into `out_npz` (written atomically); `assume_hu` skips the
    check that the CT has air (data.assume_hu: the user vouches for the values)."""
    ct = finite_ct(read_image(ct_path, case), f"{case}: {ct_path}")
    if not assume_hu:
        check_hu_range(ct, f"{case}: {ct_path}")
    liver = read_image(liver_path, case)
    if ct.GetSize() != liver.GetSize():
        raise PreprocessError(f"{case}: {liver_path} is {liver.GetSize()}, the CT {ct.GetSize()}")
    arrays = preprocess_arrays(ct, liver, spec)
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
    ref = sitk.Image([int(v) for v in grid["source_size"]], sitk.sitkFloat32)
    ref.SetOrigin(tuple(float(v) for v in grid["source_origin"]))
    ref.SetSpacing(tuple(float(v) for v in grid["source_spacing"]))
    ref.SetDirection(tuple(float(v) for v in grid["source_direction"]))
    method = sitk.sitkLinear if interpolate else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(pred, ref, sitk.Transform(), method, 0.0, sitk.sitkFloat32)
    out = sitk.Cast(resampled >= 0.5, sitk.sitkUInt8)
    out.CopyInformation(ref)
    return out


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a preprocessed case, failing with the file name when it is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise PreprocessError(f"cannot read preprocessed case {path}: {err}") from err
