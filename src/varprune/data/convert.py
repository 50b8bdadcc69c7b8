"""Convert one IRCADb patient from the archive into NIfTI volumes on the original CT grid.

One job per case, so that a broken patient stops only itself (`snakemake --keep-going`).
Everything is read and checked before anything is written, and each file is written under a
temporary name: a failing case leaves no output behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from varprune.core.atomic import atomic_path, write_json
from varprune.data.archive import (
    TUMOUR_FOLDER,
    ArchiveError,
    ExtractionLimits,
    open_zip,
    patient_of,
    patient_prefix,
    read_inner_zip,
    safe_extract,
    series_folders,
)
from varprune.data.dicom import (
    DicomTagError,
    SeriesCheck,
    check_hu,
    check_series,
    orthogonal,
    read_header,
    read_slices,
)
from varprune.data.image_file import write_complete
from varprune.data.itkerror import itk_reason

log = logging.getLogger(__name__)


@dataclass
class ConvertedCase:
    """A case read from the archive, before it is written."""

    ct: sitk.Image  # int16 HU
    liver: sitk.Image  # uint8 {0, 1}, CT geometry
    tumour: sitk.Image | None  # union of the tumour folders, or None
    meta: dict


def check_dicom(path: Path, case: str, label: str) -> None:
    """Fail with the case and file name unless `path` is a DICOM file."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return
    reader = sitk.ImageFileReader()  # some old files have no preamble: ask GDCM
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ArchiveError(f"{case}: {label}/{path.name} is not a DICOM file ({itk_reason(err)})") from err


def ct_headers(files: list[Path], case: str, label: str) -> list:
    """The headers of the CT slices, failing with the case and file name on a non-DICOM file."""
    headers = []
    for path in files:
        try:
            headers.append(read_header(path, f"{label}/{path.name}"))
        except RuntimeError as err:
            reason = itk_reason(err)
            raise ArchiveError(f"{case}: {label}/{path.name} is not a DICOM file ({reason})") from err
    return headers


def read_series(files: list[Path], case: str, label: str) -> sitk.Image:
    """Read checked slices in the given order into one volume (SimpleITK applies slope and intercept)."""
    try:
        return read_slices(files)
    except RuntimeError as err:  # ITK's message names the temporary folder: keep the reason only
        reason = itk_reason(err).replace(str(files[0].parent), label)
        raise ArchiveError(f"{case}: cannot read the series {label}: {reason}") from err


def read_mask(files: list[Path], ct: sitk.Image, ct_files: list[Path], case: str, label: str) -> sitk.Image:
    """Read a mask series, match it to the CT slice by slice (file name), binarize, copy geometry."""
    if len(files) != len(ct_files):
        raise ArchiveError(
            f"{case}: {label} has {len(files)} slices but PATIENT_DICOM has {len(ct_files)}"
        )
    by_name = {p.name: p for p in files}
    missing = [p.name for p in ct_files if p.name not in by_name]
    if missing:
        raise ArchiveError(f"{case}: {label} has no slice {missing[0]} (the CT has one)")
    ordered = [by_name[p.name] for p in ct_files]
    for path in ordered:
        check_dicom(path, case, label)
    volume = read_series(ordered, case, label)
    if volume.GetSize() != ct.GetSize():
        raise ArchiveError(f"{case}: {label} is {volume.GetSize()} voxels, the CT {ct.GetSize()}")
    binary = sitk.GetImageFromArray((sitk.GetArrayViewFromImage(volume) > 0).astype(np.uint8))
    binary.CopyInformation(ct)
    return binary


def _ct_files(ct_dir: Path, case: str) -> list[Path]:
    """The slice files of the one CT series in `ct_dir`, failing unless there is exactly one."""
    ct_groups = series_folders(ct_dir, "PATIENT_DICOM")
    if len(ct_groups) != 1:
        raise ArchiveError(
            f"{case}: PATIENT_DICOM.zip should hold one series, found folders {sorted(ct_groups)}"
        )
    ct_files = next(iter(ct_groups.values()))
    if not ct_files:
        raise ArchiveError(f"{case}: PATIENT_DICOM.zip holds no slices")
    return ct_files


def _read_ct(ct_dir: Path, case: str, assume_hu: bool) -> tuple[sitk.Image, list[Path], str, SeriesCheck]:
    """The checked int16 CT as ITK stacks it, its slice files in volume order, how that order
    was found, and the header check (whose stack geometry corrects a gantry tilt afterwards).

    The files are returned because the masks must follow the CT's slice order.
    """
    ct_files = _ct_files(ct_dir, case)
    try:
        check = check_series(ct_headers(ct_files, case, "PATIENT_DICOM"))
    except DicomTagError as err:
        raise ArchiveError(f"{case}: {err}") from err
    # Sorted by ImagePositionPatient along the slice normal (feet to head), so that the
    # volume's geometry is right whatever the file names say. Masks follow the same
    # permutation (slice k <-> image_k, by file name).
    order = "by ImagePositionPatient" if check.order != sorted(check.order) else "natural"
    ct_files = [ct_files[i] for i in check.order]
    ct = read_series(ct_files, case, "PATIENT_DICOM")
    try:
        check_hu(check, sitk.GetArrayViewFromImage(ct), f"PATIENT_DICOM/{ct_files[0].name}", assume_hu)
    except DicomTagError as err:
        raise ArchiveError(f"{case}: {err}") from err
    # Round and clamp before the cast: int16 would wrap values above 32767 (assume_hu on
    # unsigned data) and truncate a non-integer slope.
    rounded = sitk.Round(sitk.Cast(ct, sitk.sitkFloat32))
    ct = sitk.Cast(sitk.Clamp(rounded, sitk.sitkFloat32, -32768, 32767), sitk.sitkInt16)
    return ct, ct_files, order, check


def _liver_folder(masks: dict[str, list[Path]], case: str) -> str:
    """The name of the liver mask folder (matched case-insensitively); fail when there is none."""
    names = {name.lower(): name for name in masks}
    if "liver" not in names:
        raise ArchiveError(
            f"{case}: MASKS_DICOM.zip has no 'liver' folder (found: {', '.join(sorted(masks))})"
        )
    return names["liver"]


def _read_tumours(masks: dict[str, list[Path]], ct: sitk.Image, ct_files: list[Path],
                  case: str) -> tuple[list[str], sitk.Image | None]:
    """The tumour folder names and the union of their masks (None when the case has no tumour)."""
    tumour_names = sorted(n for n in masks if TUMOUR_FOLDER.match(n))
    tumour = None
    for name in tumour_names:
        one = read_mask(masks[name], ct, ct_files, case, f"MASKS_DICOM/{name}")
        tumour = one if tumour is None else sitk.Or(tumour, one)
    return tumour_names, tumour


def _case_meta(archive_path: str | os.PathLike, case: str, patient: int, ct: sitk.Image,
               liver: sitk.Image, order: str, structures: list[str], tumour_names: list[str]) -> dict:
    """The case's `meta.json`: provenance, geometry and the figures that make a bad case visible."""
    hu = sitk.GetArrayViewFromImage(ct)
    liver_voxels = int(sitk.GetArrayViewFromImage(liver).sum())
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    return {
        "case": case,
        "patient": patient,
        "archive": Path(archive_path).name,
        "slices": ct.GetSize()[2],
        "size": list(ct.GetSize()),
        "spacing_mm": [round(s, 6) for s in ct.GetSpacing()],
        "origin_mm": list(ct.GetOrigin()),
        "direction": list(ct.GetDirection()),
        "slice_order": order,
        "hu_min": int(hu.min()),
        "hu_max": int(hu.max()),
        "structures": structures,
        "tumour_folders": tumour_names,
        "liver_voxels": liver_voxels,
        "liver_volume_ml": round(liver_voxels * voxel_ml, 2),
    }


def read_case(archive_path: str | os.PathLike, case: str, assume_hu: bool = False,
              limits: ExtractionLimits | None = None) -> ConvertedCase:
    """Read one case's CT, liver and tumour masks from the archive and check them (the CT's
    DICOM tags too: `varprune.data.dicom`)."""
    patient = patient_of(case)
    with open_zip(archive_path, case) as archive, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        prefix = patient_prefix(archive, patient)
        for inner, folder in (("PATIENT_DICOM.zip", "ct"), ("MASKS_DICOM.zip", "masks")):
            safe_extract(read_inner_zip(archive, prefix, inner, case), tmp / folder, case, limits,
                         f"{Path(archive_path).name}:{prefix}{inner}")
        ct, ct_files, order, check = _read_ct(tmp / "ct", case, assume_hu)

        masks = series_folders(tmp / "masks", "MASKS_DICOM")
        liver_folder = _liver_folder(masks, case)
        liver = read_mask(masks[liver_folder], ct, ct_files, case, f"MASKS_DICOM/{liver_folder}")
        tumour_names, tumour = _read_tumours(masks, ct, ct_files, case)
        if check.stack is not None and check.stack.shear.any():
            log.warning("%s: the slices are tilted %.1f degrees against the table (gantry tilt): the CT and "
                        "its masks are resampled onto an orthogonal grid with their true positions", case,
                        check.tilt_deg)
            ct, liver = orthogonal(ct, check), orthogonal(liver, check, label=True)
            tumour = None if tumour is None else orthogonal(tumour, check, label=True)
        meta = _case_meta(archive_path, case, patient, ct, liver, order, sorted(masks), tumour_names)
        meta["gantry_tilt_deg"] = round(check.tilt_deg, 3)
        if meta["liver_voxels"] == 0:
            raise ArchiveError(f"{case}: the liver mask MASKS_DICOM/{liver_folder} is empty")
        return ConvertedCase(ct=ct, liver=liver, tumour=tumour, meta=meta)


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write a NIfTI (or any SimpleITK format) atomically, checked whole before it is renamed."""
    with atomic_path(path) as tmp:
        write_complete(image, tmp)


def convert_case(archive_path: str | os.PathLike, case: str, out_dir: str | os.PathLike,
                 assume_hu: bool = False, limits: ExtractionLimits | None = None) -> dict:
    """Convert one case to `out_dir/{ct,liver[,tumor]}.nii.gz` and `meta.json`; return the meta."""
    converted = read_case(archive_path, case, assume_hu, limits)
    out = Path(out_dir)
    write_image(converted.ct, out / "ct.nii.gz")
    write_image(converted.liver, out / "liver.nii.gz")
    if converted.tumour is not None:
        write_image(converted.tumour, out / "tumor.nii.gz")
    write_json(out / "meta.json", converted.meta)
    log.info("%s: %d slices, spacing %s mm, liver %.1f ml", case, converted.meta["slices"],
             converted.meta["spacing_mm"], converted.meta["liver_volume_ml"])
    return converted.meta
