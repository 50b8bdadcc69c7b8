"""`varprune predict`: a liver mask for a CT, on the CT's own grid.

Inputs: a DICOM series folder (files with or without `.dcm`), a NIfTI file, or one IRCADb
patient (its `3Dircadb1.N` folder or a `3Dircadb1.N.zip`). The preprocessing (HU window,
spacing, input size) comes from the checkpoint's provenance, so a model carries what it needs.
Post-processing keeps the largest 3D connected component (the liver is one organ) unless
switched off. Every failure names the input and the problem, and leaves no output file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from varprune.core.atomic import atomic_path
from varprune.core.precision import PrecisionError
from varprune.data import plausibility
from varprune.data.archive import (
    ArchiveError,
    ExtractionLimits,
    list_patients,
    open_zip,
    safe_extract,
    series_folders,
)
from varprune.data.dicom import (
    DESCRIPTION,
    MODALITY,
    SERIES_NUMBER,
    THICKNESS,
    DicomTagError,
    Header,
    check_hu,
    check_series,
    orthogonal,
    read_header,
    read_slices,
)
from varprune.data.image_file import ImageFileError, read_image, write_complete
from varprune.data.itkerror import itk_reason
from varprune.data.preprocess import (
    PreprocessSpec,
    canonical,
    check_hu_range,
    finite_ct,
    preprocess_arrays,
    to_original_grid,
)
from varprune.engine.evaluate import keep_largest_component
from varprune.model.deployed import ready
from varprune.model.inference import predict_volume
from varprune.model.network import CheckpointError, ModelSpec

log = logging.getLogger(__name__)


class InputError(Exception):
    """The input cannot be used; the message names it and says why."""


NIFTI_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def _dicom_header(path: Path, shown: str) -> Header:
    try:
        return read_header(path, shown)
    except RuntimeError as err:
        raise InputError(f"{shown}: not a readable DICOM file ({itk_reason(err)})") from err


def _series_list(folder: Path, ids: list[str], shown_as: str) -> list[str]:
    """One line per series, numbered from 1 (what --series also takes): UID, description, slice
    count and thickness, so that the user can tell the 5 mm series from the localizer."""
    lines = []
    for number, uid in enumerate(ids, start=1):
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        try:
            tags = read_header(names[0], names[0]).tags
        except RuntimeError:
            tags = {}
        described = ", ".join(part for part in (
            repr(tags[DESCRIPTION]) if tags.get(DESCRIPTION) else "",
            f"series number {tags[SERIES_NUMBER]}" if tags.get(SERIES_NUMBER) else "",
            f"{len(names)} slice(s)",
            f"{tags[THICKNESS]} mm thick" if tags.get(THICKNESS) else "") if part)
        lines.append(f"  {number}: {uid} ({described})")
    return lines


def _chosen_series(folder: Path, ids: list[str], series: str | None, shown_as: str) -> str:
    """The UID asked for by `series` (a UID, or its number in the listed order)."""
    if series is None and len(ids) == 1:
        return ids[0]
    if series in ids:
        return series
    if series is not None and series.isdigit() and 1 <= int(series) <= len(ids):
        return ids[int(series) - 1]
    listing = "\n".join(_series_list(folder, ids, shown_as))
    if series is None:
        raise InputError(f"{shown_as}: holds {len(ids)} series; choose one with --series (its number or "
                         f"UID):\n{listing}")
    raise InputError(f"{shown_as}: no series {series}; it holds:\n{listing}")


def read_dicom_folder(folder: Path, series: str | None = None, assume_hu: bool = False,
                      shown_as: str | None = None) -> sitk.Image:
    """The CT series of a folder; several series need `series` (their UIDs are listed).

    The tags the reading relies on are checked first (`varprune.data.dicom`); messages name the
    files as `shown_as/name` (the user's zip rather than a temporary folder)."""
    shown_as = shown_as or str(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{shown_as}: the folder is empty")
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise InputError(f"{shown_as}: no DICOM series found among its {len(files)} file(s)")
    chosen = _chosen_series(folder, ids, series, shown_as)
    in_series = {Path(n).resolve() for uid in ids
                 for n in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)}
    for path in files:
        if path.resolve() not in in_series:
            _dicom_header(path, f"{shown_as}/{path.name}")  # raises when it is not readable DICOM
            raise InputError(f"{shown_as}/{path.name}: a DICOM file that belongs to no readable series")
    names = [Path(n) for n in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen)]
    headers = [_dicom_header(p, f"{shown_as}/{p.name}") for p in names]  # a corrupt slice fails here
    try:
        check = check_series(headers)
    except DicomTagError as err:
        raise InputError(str(err)) from err
    names = [names[i] for i in check.order]
    try:
        ct = read_slices(names)
    except RuntimeError as err:
        raise InputError(f"{shown_as}: cannot read the series ({itk_reason(err)})") from err
    try:
        check_hu(check, sitk.GetArrayViewFromImage(ct), headers[check.order[0]].name, assume_hu)
    except DicomTagError as err:
        raise InputError(str(err)) from err
    if check.stack is not None and np.any(check.stack.shear):
        log.warning("%s: the slices are tilted %.1f degrees against the table (gantry tilt): resampled onto "
                    "an orthogonal grid with their true positions; the mask is on that grid", shown_as,
                    check.tilt_deg)
        ct = orthogonal(ct, check)
    return ct


def _ircadb_patient_folder(folder: Path, tmp: Path, series: str | None, assume_hu: bool,
                           shown_as: str) -> sitk.Image:
    """An IRCADb patient folder: PATIENT_DICOM.zip (as in the archive) or PATIENT_DICOM/."""
    inner = folder / "PATIENT_DICOM.zip"
    if inner.is_file():
        try:
            with zipfile.ZipFile(inner) as zf:
                safe_extract(zf, tmp / "ct", folder.name, what=f"{shown_as}/PATIENT_DICOM.zip")
        except ArchiveError as err:
            raise InputError(str(err)) from err
        except zipfile.BadZipFile as err:
            raise InputError(f"{shown_as}/PATIENT_DICOM.zip: not a readable zip ({err})") from err
        groups = series_folders(tmp / "ct", "PATIENT_DICOM")
        if len(groups) != 1:
            raise InputError(f"{shown_as}/PATIENT_DICOM.zip: expected one series folder, "
                             f"found {sorted(groups)}")
        ct_folder = next(iter(groups.values()))[0].parent
        return read_dicom_folder(ct_folder, series, assume_hu,
                                 f"{shown_as}/PATIENT_DICOM.zip:{ct_folder.relative_to(tmp / 'ct')}")
    return read_dicom_folder(folder / "PATIENT_DICOM", series, assume_hu, f"{shown_as}/PATIENT_DICOM")


def read_ct(path: str | os.PathLike, series: str | None = None, assume_hu: bool = False,
            nifti_geometry: str | None = None) -> sitk.Image:
    """Read a CT from any supported input (see the module docstring); `nifti_geometry` (sform |
    qform) is followed when a NIfTI file's two geometries disagree (refused otherwise)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if path.is_dir():
            if (path / "PATIENT_DICOM.zip").exists() or (path / "PATIENT_DICOM").is_dir():
                return _ircadb_patient_folder(path, tmp, series, assume_hu, str(path))
            return read_dicom_folder(path, series, assume_hu)
        if path.name.lower().endswith(".zip"):
            try:
                with open_zip(path, path.name) as archive:
                    patients = list_patients(archive)
                    if len(patients) != 1:
                        raise InputError(f"{path}: expected one IRCADb patient, found {len(patients)}")
                    # Its members are the patient's inner zips, not slices: the slice limit does not fit.
                    safe_extract(archive, tmp / "patient", path.name, NESTED_ZIP_LIMITS, what=str(path))
            except ArchiveError as err:
                raise InputError(str(err)) from err
            folders = [p.parent for p in (tmp / "patient").rglob("PATIENT_DICOM.zip")]
            if len(folders) != 1:
                raise InputError(f"{path}: no PATIENT_DICOM.zip inside")
            return _ircadb_patient_folder(folders[0], tmp / "inner", series, assume_hu,
                                          f"{path}:{folders[0].relative_to(tmp / 'patient')}")
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            try:
                return read_image(path, str(path), nifti_geometry)
            except ImageFileError as err:
                raise InputError(str(err)) from err
        if _dicom_header(path, str(path)).tags.get(MODALITY, "CT").upper() != "CT":
            raise InputError(f"{path}: not a CT")
        raise InputError(f"{path}: a single DICOM file; give the folder that holds the series")


def check_fits(ct: sitk.Image, spec: ModelSpec, source: str) -> None:
    """Refuse inputs the model cannot take."""
    if ct.GetDimension() != 3 or ct.GetSize()[2] < 1:
        if spec.spatial_dims == 3:
            raise InputError(f"{source}: a 2D image, but the model is 3D and needs a volume")
        raise InputError(f"{source}: expected a 3D CT volume (slices), got a {ct.GetDimension()}D image")
    slices = canonical(ct).GetSize()[2]  # axial slices, whatever the stored layout
    if spec.spatial_dims == 3 and slices < spec.depth:
        raise InputError(f"{source}: {slices} slice(s), but the model is 3D and reads slabs of "
                         f"{spec.depth} slices: give a CT of at least {spec.depth} slices")
    if ct.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source}: a colour/vector image, not a CT")


def preprocess_spec(provenance: dict, model_path: str | os.PathLike) -> PreprocessSpec:
    """The preprocessing the model was trained with; refuse a checkpoint without it."""
    config = provenance.get("config", {}).get("preprocess")
    if not config:
        raise CheckpointError(f"{model_path}: the checkpoint does not record its preprocessing "
                              "(provenance.config.preprocess); it cannot be used on new CTs")
    return PreprocessSpec.from_config(config)


def segment(model, spec: ModelSpec, prep: PreprocessSpec, ct: sitk.Image, device: torch.device,
            batch_size: int = 16, largest_component: bool = True, precision: str = "fp32") -> sitk.Image:
    """Liver mask of `ct` on its own grid; `precision`: a resolved one (`varprune.core.precision`)."""
    if ct.GetDimension() == 2:
        ct = sitk.JoinSeries(ct)
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    arrays = preprocess_arrays(sitk.Cast(ct, sitk.sitkFloat32), empty, prep)
    prob = predict_volume(model, arrays["image"], spec, device, batch_size, progress=True,
                          precision=precision)
    mask = to_original_grid(prob, arrays, interpolate=True)
    if largest_component:
        largest = keep_largest_component(sitk.GetArrayFromImage(mask) > 0)
        kept = sitk.GetImageFromArray(largest.astype(np.uint8))
        kept.CopyInformation(mask)
        mask = kept
    return mask


def write_preview(ct: sitk.Image, mask: sitk.Image, window: tuple[float, float], path: str | os.PathLike,
                  slices: int = 4) -> None:
    """A PNG of a few axial slices through the liver with its contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = sitk.GetArrayFromImage(ct)
    liver = sitk.GetArrayFromImage(mask) > 0
    area = liver.sum(axis=(1, 2))
    candidates = np.flatnonzero(area) if area.any() else np.arange(len(area))
    chosen = candidates[np.linspace(0, len(candidates) - 1, min(slices, len(candidates))).round().astype(int)]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4), squeeze=False)
    for ax, z in zip(axes[0], chosen, strict=True):
        ax.imshow(image[z], cmap="gray", vmin=window[0], vmax=window[1])
        if liver[z].any():
            ax.contour(liver[z], [0.5], colors="red", linewidths=1.2)
        ax.set_title(f"slice {z}: {area[z] * float(np.prod(ct.GetSpacing())) / 1000:.1f} ml", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=90, format="png")  # predict passes a temporary path
    finally:
        plt.close(fig)


NESTED_ZIP_LIMITS = ExtractionLimits(max_member_mb=8192.0, max_total_mb=32768.0)
OUTPUT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def findings_path(output: str | os.PathLike) -> Path:
    """The sidecar JSON written next to the mask: `liver.nii.gz` -> `liver.json`."""
    output = Path(output)
    name = output.name
    for suffix in sorted(OUTPUT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_name(name + ".json")


def check_options(model_path, input_path, output, preview, device: str, threads: int | None,
                  batch_size: int) -> None:
    """Refuse bad options before anything is read or computed."""
    if not str(output).lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(f"--output {output}: the mask needs a NIfTI name ({', '.join(OUTPUT_SUFFIXES)})")
    if preview and not str(preview).lower().endswith(".png"):
        raise InputError(f"--preview {preview}: the preview is a PNG; give a name ending in .png")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: give a positive number of CPU threads")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: give a positive number of slices per pass")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    inputs = {Path(p).resolve() for p in (model_path, input_path)}
    outputs = [Path(p) for p in (output, preview) if p]
    if str(output).lower().endswith(OUTPUT_SUFFIXES):
        outputs.append(findings_path(output))
    for out in outputs:
        if out.resolve() in inputs:
            raise InputError(f"{out}: the output would overwrite an input; choose another name")
        if out.is_dir():
            raise InputError(f"{out}: is a folder; give a file name")


def predict(model_path: str | os.PathLike, input_path: str | os.PathLike, output: str | os.PathLike,
            preview: str | os.PathLike | None = None, series: str | None = None, device: str = "auto",
            threads: int | None = None, batch_size: int = 16, largest_component: bool = True,
            assume_hu: bool = False, precision: str = "auto", nifti_geometry: str | None = None) -> dict:
    """The whole command: check the options, read, check, segment, then write the mask, the
    preview and the sidecar JSON (`findings_path`: plausibility warnings, volume, model) together
    (all or none)."""
    check_options(model_path, input_path, output, preview, device, threads, batch_size)
    if threads:
        torch.set_num_threads(threads)
    try:
        loaded, target, resolved = ready(model_path, device, precision, threads)
    except PrecisionError as err:
        raise InputError(f"--precision {precision}: {err}") from err
    spec = loaded.spec
    prep = preprocess_spec(loaded.provenance, model_path)
    ct = finite_ct(read_ct(input_path, series, assume_hu, nifti_geometry), str(input_path))
    if not assume_hu:
        check_hu_range(ct, str(input_path))
    check_fits(ct, spec, str(input_path))
    findings = plausibility.report(plausibility.check_ct(ct, prep.body_threshold_hu), str(input_path))
    log.info("%s: %s on %s, precision %s", model_path, loaded.runtime, target, resolved)
    mask = segment(loaded.model.to(target), spec, prep, ct, target, batch_size, largest_component, resolved)
    volume_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(ct.GetSpacing())) / 1000
    findings += plausibility.report(plausibility.check_liver(volume_ml), str(input_path))
    result = {"input": str(input_path), "output": str(output), "model": str(model_path),
              "runtime": loaded.runtime, "precision": resolved, "liver_ml": round(volume_ml, 2),
              "size": list(mask.GetSize()), "spacing_mm": [round(v, 6) for v in mask.GetSpacing()],
              "warnings": [finding.as_dict() for finding in findings]}
    with contextlib.ExitStack() as stack:
        tmp_mask = stack.enter_context(atomic_path(output))
        if preview:
            write_preview(ct, mask, prep.window, stack.enter_context(atomic_path(preview)))
        write_complete(mask, tmp_mask)
        tmp_json = stack.enter_context(atomic_path(findings_path(output)))
        tmp_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info("%s -> %s: liver %.1f ml%s", input_path, output, volume_ml,
             f", {len(findings)} warning(s) in {findings_path(output)}" if findings else "")
    return result
