"""Cases from NIfTI folders: the Medical Segmentation Decathlon's Task03_Liver and LiTS naming.

Each case becomes the same files as an IRCADb case (`varprune.data.convert`): `ct.nii.gz`
(int16 HU), `liver.nii.gz` (uint8 0/1), `tumor.nii.gz` when the case has tumour voxels, and
`meta.json`, on the CT's original grid and in its original orientation (preprocess reorients).

Discovery only lists files (it runs while Snakemake parses the workflow); every check of the
voxels happens in the per-case job, so that a broken case stops only itself with
`snakemake --keep-going`. A case is read and checked completely before anything is written,
and each file is written under a temporary name: a failing case leaves no output behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.core.atomic import write_json
from varprune.data.archive import DEBRIS_NAMES, natural_key
from varprune.data.convert import write_image
from varprune.data.image_file import ImageFileError, read_image
from varprune.data.preprocess import PreprocessError, check_hu_range, finite_ct

log = logging.getLogger(__name__)

LAYOUTS = ("folders", "msd")
# A case id becomes a folder name and a Snakemake wildcard value.
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# How far the label's grid may be from the CT's: NIfTI stores geometry as float32.
GRID_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4
SLAB_VOXELS = 1 << 22  # voxels per slab when scanning a volume, to bound temporary memory


class NiftiError(Exception):
    """A NIfTI source or one case in it cannot be used; the message names the file."""


@dataclass(frozen=True)
class NiftiSource:
    """Where the NIfTI cases are and how their files and labels are named (config `data.nifti`)."""

    root: Path
    layout: str  # "folders": pattern matching in `images`; "msd": the pairs of root/dataset.json
    images: str = "imagesTr"
    labels: str = "labelsTr"
    image_pattern: str = "{id}.nii.gz"
    label_pattern: str = "{id}.nii.gz"
    cases: tuple[str, ...] | None = None
    liver_labels: tuple[int, ...] = (1, 2)
    tumor_labels: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout for NIfTI must be one of {', '.join(LAYOUTS)}, "
                             f"got {self.layout!r}")
        for key, pattern in (("image", self.image_pattern), ("label", self.label_pattern)):
            if pattern.count("{id}") != 1 or "/" in pattern:
                raise ValueError(f"data.nifti.pattern.{key} must be a file name with one {{id}}, "
                                 f"got {pattern!r}")
            try:
                pattern.format(id="x")
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"data.nifti.pattern.{key}: {pattern!r} has braces other than "
                                 "{id}") from err
        if not self.liver_labels:
            raise ValueError("data.nifti.liver_labels must name at least one label value")

    @classmethod
    def from_config(cls, data: dict) -> NiftiSource:
        """Build it from the config's `data` section (`data.layout`, `data.nifti`)."""
        nifti = data.get("nifti") or {}
        if "root" not in nifti:
            raise ValueError("data.nifti.root is required for data.layout "
                             f"{data.get('layout')!r}")
        pattern = nifti.get("pattern") or {}
        cases = nifti.get("cases")
        return cls(
            root=Path(str(nifti["root"])).expanduser(),
            layout=str(data.get("layout")),
            images=str(nifti.get("images", "imagesTr")),
            labels=str(nifti.get("labels", "labelsTr")),
            image_pattern=str(pattern.get("image", "{id}.nii.gz")),
            label_pattern=str(pattern.get("label", "{id}.nii.gz")),
            cases=None if cases is None else tuple(str(c) for c in cases),
            liver_labels=tuple(int(v) for v in nifti.get("liver_labels", (1, 2))),
            tumor_labels=tuple(int(v) for v in nifti.get("tumor_labels", (2,))),
        )


def is_hidden(name: str) -> bool:
    """Hidden files and OS debris (`._liver_0.nii.gz` in MSD tarballs, `.DS_Store`)."""
    return name.startswith(".") or name in DEBRIS_NAMES


def case_of(image: Path) -> str:
    """The case id of an image file: its name without the image suffix (`liver_3`, `volume-17`)."""
    name = image.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """`volume-{id}.nii` -> a regex whose group `id` is any run of characters but '/'."""
    head, tail = pattern.split("{id}")
    return re.compile(f"{re.escape(head)}(?P<id>[^/]+){re.escape(tail)}")


def _folder_pairs(source: NiftiSource) -> list[tuple[Path, Path]]:
    """(image, label) for every image in `root/images` matching the image pattern."""
    folder = source.root / source.images
    if not folder.is_dir():
        raise NiftiError(f"the images folder {folder} does not exist")
    regex = _pattern_regex(source.image_pattern)
    with os.scandir(folder) as scan:
        entries = [entry.name for entry in scan if not is_hidden(entry.name) and entry.is_file()]
    pairs = []
    for name in entries:
        match = regex.fullmatch(name)
        if match:
            label = source.root / source.labels / source.label_pattern.format(id=match["id"])
            pairs.append((folder / name, label))
    if not pairs:
        raise NiftiError(f"no image matching {source.image_pattern!r} in {folder}")
    return pairs


def _msd_pairs(source: NiftiSource) -> list[tuple[Path, Path]]:
    """(image, label) for every `training` entry of `root/dataset.json`."""
    index = source.root / "dataset.json"
    try:
        dataset = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise NiftiError(f"{index} does not exist (data.layout msd needs the Decathlon's dataset.json; "
                         "use data.layout folders without one)") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NiftiError(f"cannot read {index}: {err}") from err
    training = dataset.get("training") if isinstance(dataset, dict) else None
    if not isinstance(training, list):
        raise NiftiError(f"{index} has no 'training' list")
    pairs = []
    for k, entry in enumerate(training):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            raise NiftiError(f"{index}: training entry {k} is not an {{\"image\": ..., \"label\": ...}} "
                             f"pair: {entry!r}")
        image, label = source.root / entry["image"], source.root / entry["label"]
        if is_hidden(image.name):
            continue
        if not image.is_file():
            raise NiftiError(f"{index}: training entry {k} names the image {image}, which does not exist")
        pairs.append((image, label))
    if not pairs:
        raise NiftiError(f"{index} lists no training image")
    return pairs


def discover_cases(source: NiftiSource) -> dict[str, tuple[Path, Path]]:
    """Case id -> (image, label) in natural order of the ids, without reading any image.

    A missing label is returned as is: the case's own job fails naming it, the others go on."""
    if not source.root.is_dir():
        raise NiftiError(f"the NIfTI root {source.root} does not exist")
    pairs = _folder_pairs(source) if source.layout == "folders" else _msd_pairs(source)
    found: dict[str, tuple[Path, Path]] = {}
    for image, label in pairs:
        case = case_of(image)
        if not CASE_ID.fullmatch(case):
            raise NiftiError(f"{image}: the case id {case!r} is not usable as a file name and wildcard "
                             "(letters, digits, '_', '.', '-', starting with a letter or digit)")
        if case in found:
            raise NiftiError(f"two images give the case id {case!r}: {found[case][0]} and {image}")
        found[case] = (image, label)
    if source.cases is not None:
        unknown = [c for c in source.cases if c not in found]
        if unknown:
            where = source.root / ("dataset.json" if source.layout == "msd" else source.images)
            raise NiftiError(f"data.nifti.cases names case(s) not found in {where}: {', '.join(unknown)}")
        found = {c: found[c] for c in source.cases}
    return {c: found[c] for c in sorted(found, key=natural_key)}


def read_volume(path: Path, case: str, geometry: str | None = None) -> sitk.Image:
    """Read a scalar 3D image after the header checks of `varprune.data.image_file` (size,
    completeness, pixdim, sform vs qform, resolved by `geometry`) and this module's own
    (dimension, components): a 4D series is refused before its voxels are read."""
    def check(reader: sitk.ImageFileReader) -> None:
        dimension, size = reader.GetDimension(), tuple(reader.GetSize())
        if dimension != 3:
            hint = " (a time series? keep one volume)" if dimension > 3 else ""
            raise NiftiError(f"{case}: {path} is {dimension}D, size {size}; expected a 3D volume{hint}")
        if reader.GetNumberOfComponents() != 1:
            raise NiftiError(f"{case}: {path} has {reader.GetNumberOfComponents()} components per voxel; "
                             "expected one")

    try:
        return read_image(path, f"{case}: {path}", geometry, check_header=check)  # applies scl_slope/inter
    except ImageFileError as err:
        raise NiftiError(str(err)) from err


def _fmt(values, unit: str) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")" + (f" {unit}" if unit else "")


def check_same_grid(label: sitk.Image, ct: sitk.Image, label_path: Path, ct_path: Path, case: str) -> None:
    """Refuse a label that is not on the CT's grid: the masks get the CT's geometry as is, so a
    label on another grid would land on the wrong voxels."""
    checks = [
        ("size", label.GetSize(), ct.GetSize(), None, "voxels"),
        ("spacing", label.GetSpacing(), ct.GetSpacing(), GRID_TOLERANCE_MM, "mm"),
        ("origin", label.GetOrigin(), ct.GetOrigin(), GRID_TOLERANCE_MM, "mm"),
        ("direction", label.GetDirection(), ct.GetDirection(), DIRECTION_TOLERANCE, ""),
    ]
    for what, mine, theirs, tolerance, unit in checks:
        same = mine == theirs if tolerance is None else np.allclose(mine, theirs, rtol=0.0, atol=tolerance)
        if not same:
            raise NiftiError(f"{case}: {label_path} is not on the grid of {ct_path}: {what} "
                             f"{_fmt(mine, unit)} vs {_fmt(theirs, unit)}")


def _slabs(values: np.ndarray):
    """Consecutive slabs of whole slices of a (z, y, x) array, about SLAB_VOXELS each (views)."""
    step = max(1, SLAB_VOXELS // max(1, values[0].size)) if values.shape[0] else 1
    for start in range(0, values.shape[0], step):
        yield values[start:start + step]


def to_int16_hu(ct: sitk.Image) -> sitk.Image:
    """The CT as int16 HU: round half up (as ITK's Round, like convert.py) and clamp to the int16
    range, slab by slab so that a 1000-slice float CT needs no full-size float temporary."""
    if ct.GetPixelID() == sitk.sitkInt16:
        return ct
    values = sitk.GetArrayViewFromImage(ct)
    out = np.empty(values.shape, dtype=np.int16)
    start = 0
    for slab in _slabs(values):
        if np.issubdtype(slab.dtype, np.floating):
            slab = np.floor(slab + 0.5)
        out[start:start + slab.shape[0]] = np.clip(slab, -32768, 32767)
        start += slab.shape[0]
    converted = sitk.GetImageFromArray(out)
    converted.CopyInformation(ct)
    return converted


def label_counts(values: np.ndarray, path: Path, case: str) -> dict[int, int]:
    """Voxel count of every label value present; fail on a non-integer value (not a label map)."""
    counts: dict[int, int] = {}
    floating = np.issubdtype(values.dtype, np.floating)
    for slab in _slabs(values):
        if floating:
            whole = np.isfinite(slab) & (slab == np.floor(slab))
            if not whole.all():
                bad = slab[~whole].flat[0]
                raise NiftiError(f"{case}: {path} has non-integer label values (e.g. {bad:g}): "
                                 "not a label map")
        uniques, n = np.unique(slab, return_counts=True)
        for value, count in zip(uniques.tolist(), n.tolist(), strict=True):
            counts[int(value)] = counts.get(int(value), 0) + count
    return dict(sorted(counts.items()))


def _mask(values: np.ndarray, labels: tuple[int, ...], ct: sitk.Image) -> tuple[sitk.Image, int]:
    """The uint8 0/1 mask of `labels` on the CT's exact geometry, and its voxel count."""
    inside = np.isin(values, labels)
    mask = sitk.GetImageFromArray(inside.view(np.uint8))
    mask.CopyInformation(ct)
    return mask, int(np.count_nonzero(inside))


def _checked_ct(image: Path, case: str, assume_hu: bool, geometry: str | None) -> sitk.Image:
    """The CT as int16 HU, refused when it is not one (NaN, no air) unless `assume_hu`."""
    source_ct = read_volume(image, case, geometry)
    source = f"{case}: {image}"
    try:
        ct = to_int16_hu(finite_ct(source_ct, source))
        del source_ct
        if not assume_hu:
            check_hu_range(ct, source)
    except PreprocessError as err:
        raise NiftiError(str(err)) from err
    return ct


@dataclass
class _Masks:
    liver: sitk.Image
    liver_voxels: int
    tumor: sitk.Image | None
    tumor_voxels: int
    counts: dict[int, int]


def _checked_masks(label: Path, image: Path, ct: sitk.Image, case: str, liver_labels: tuple[int, ...],
                   tumor_labels: tuple[int, ...], geometry: str | None) -> _Masks:
    """Liver and tumour masks from the label map, on the CT's grid; refused when the label map
    is on another grid, is not integer, or has no liver."""
    label_image = read_volume(label, case, geometry)
    check_same_grid(label_image, ct, label, image, case)
    values = sitk.GetArrayViewFromImage(label_image)  # label_image stays alive while this is used
    counts = label_counts(values, label, case)
    expected = {0, *liver_labels, *tumor_labels}
    unexpected = {v: n for v, n in counts.items() if v not in expected}
    if unexpected:
        log.warning("%s: %s has label values outside {0} + liver %s + tumour %s (voxels: %s); they count "
                    "as background", case, label, liver_labels, tumor_labels, unexpected)
    liver, liver_voxels = _mask(values, liver_labels, ct)
    if liver_voxels == 0:
        raise NiftiError(f"{case}: {label} has no liver voxel (no value in {list(liver_labels)}; "
                         f"values present: {list(counts)})")
    tumor, tumor_voxels = _mask(values, tumor_labels, ct) if tumor_labels else (None, 0)
    return _Masks(liver, liver_voxels, tumor, tumor_voxels, counts)


def _meta(case: str, image: Path, label: Path, ct: sitk.Image, masks: _Masks,
          liver_labels: tuple[int, ...], tumor_labels: tuple[int, ...]) -> dict:
    """The case's `meta.json`: provenance, geometry and the figures that make a bad case visible."""
    hu = sitk.GetArrayViewFromImage(ct)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    return {
        "case": case,
        "image": image.name,
        "label": label.name,
        "slices": ct.GetSize()[2],
        "size": list(ct.GetSize()),
        "spacing_mm": [round(s, 6) for s in ct.GetSpacing()],
        "origin_mm": list(ct.GetOrigin()),
        "direction": list(ct.GetDirection()),
        "hu_min": int(hu.min()),
        "hu_max": int(hu.max()),
        "label_values": list(masks.counts),
        "liver_labels": list(liver_labels),
        "tumor_labels": list(tumor_labels),
        "liver_voxels": masks.liver_voxels,
        "liver_volume_ml": round(masks.liver_voxels * voxel_ml, 2),
        "tumor_voxels": masks.tumor_voxels,
    }


def convert_nifti_case(image: str | os.PathLike, label: str | os.PathLike, case: str,
                       out_dir: str | os.PathLike, liver_labels: tuple[int, ...] | list[int] = (1, 2),
                       tumor_labels: tuple[int, ...] | list[int] = (2,), assume_hu: bool = False,
                       geometry: str | None = None) -> dict:
    """Convert one case to `out_dir/{ct,liver[,tumor]}.nii.gz` and `meta.json`; return the meta.

    `assume_hu` skips the check that the CT has air (data.assume_hu: the user vouches for the
    values); `geometry` (sform | qform, data.nifti.geometry) is followed when a file's two NIfTI
    geometries disagree (refused otherwise). Everything is read and checked before the first
    file is written."""
    image, label = Path(image), Path(label)
    liver_labels, tumor_labels = tuple(int(v) for v in liver_labels), tuple(int(v) for v in tumor_labels)
    if not liver_labels:
        raise ValueError("liver_labels must name at least one label value")
    if not label.is_file():
        raise NiftiError(f"{case}: no label {label} for image {image}")
    ct = _checked_ct(image, case, assume_hu, geometry)
    masks = _checked_masks(label, image, ct, case, liver_labels, tumor_labels, geometry)
    meta = _meta(case, image, label, ct, masks, liver_labels, tumor_labels)

    out = Path(out_dir)
    write_image(ct, out / "ct.nii.gz")
    write_image(masks.liver, out / "liver.nii.gz")
    if masks.tumor is not None and masks.tumor_voxels:
        write_image(masks.tumor, out / "tumor.nii.gz")
    else:  # a tumour mask left by an earlier run (other tumor_labels) would no longer be true
        (out / "tumor.nii.gz").unlink(missing_ok=True)
    write_json(out / "meta.json", meta)
    log.info("%s: %d slices, spacing %s mm, liver %.1f ml, %d tumour voxels", case, meta["slices"],
             meta["spacing_mm"], meta["liver_volume_ml"], masks.tumor_voxels)
    return meta
