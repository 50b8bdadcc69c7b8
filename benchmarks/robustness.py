"""Robustness probe: every hostile-but-realistic input, through the real commands, in one table.

Run from the repository root after the default pipeline (it needs a trained model and the
archive):
  python benchmarks/robustness.py
  python benchmarks/robustness.py --model results/default/dense/model.pt --archive data/raw/3Dircadb1.zip

Each probe builds its input in a temporary folder, runs `varprune ...` (or a Snakemake dry run)
as its own process, and checks the exit code, the message, what was left behind and, for the
orientation probes, that the mask agrees with the LPS one (Dice >= 0.99 after mapping back).
Peak memory is the process's own maximum resident set (os.wait4). The probe inputs are built by
tests/probes.py, the same code the tests use.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests import probes  # noqa: E402
from tests.conftest import rewrite_inner  # noqa: E402

MEMORY_LIMIT_MB = 1024


@dataclass
class Probe:
    """One input, the command to run on it, and what a correct answer looks like."""

    name: str
    build: Callable[[Path], list[str]]  # returns the command's arguments
    code: int  # expected exit code (0, or non-zero: refused)
    message: str = ""  # expected in stderr when refused (or in the log when accepted)
    leaves: list[str] = field(default_factory=list)  # files that must exist afterwards (accepted)
    check: Callable[[Path], str] | None = None  # extra check on success: "" or what is wrong
    limit_mb: float | None = None
    not_in: tuple[str, ...] = ()  # must not appear in the output (ITK source locations)


def run(argv: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run a command; return its exit code, output (Snakemake reports errors on stdout) and peak
    memory in MB."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read().decode(errors="replace"), usage.ru_maxrss / 1024


def varprune(*args: str) -> list[str]:
    return [sys.executable, "-m", "varprune.app.cli", *args]


def probe_set(model: Path, archive: Path, case: str, ct: Path) -> list[Probe]:
    patient = int(case[5:])

    def convert(edit, masks_too=False, *extra):
        def build(tmp: Path) -> list[str]:
            edited = probes.archive_with(archive, tmp / "in.zip", patient, edit, masks_too)
            return varprune("convert", str(edited), str(tmp / "out"), "--patients", str(patient), *extra)
        return build

    def convert_inner(edit):
        def build(tmp: Path) -> list[str]:
            edited = rewrite_inner(archive, tmp / "in.zip", patient, "PATIENT_DICOM.zip", edit)
            return varprune("convert", str(edited), str(tmp / "out"), "--patients", str(patient))
        return build

    def truncated(after_inner: bool) -> Callable[[Path], list[str]]:
        """Cut at 60 %, or right after the first inner zip: then Python's zip reader finds that
        inner zip's end record and takes it for the archive."""
        def build(tmp: Path) -> list[str]:
            data = archive.read_bytes()
            end = int(len(data) * 0.6)
            if after_inner:
                with zipfile.ZipFile(archive) as zf:
                    info = next(i for i in zf.infolist() if i.filename.endswith("PATIENT_DICOM.zip"))
                    header = 30 + len(info.filename.encode()) + len(info.extra)
                    end = info.header_offset + header + info.compress_size
            (tmp / "in.zip").write_bytes(data[:end])
            return varprune("convert", str(tmp / "in.zip"), str(tmp / "out"))
        return build

    def predict(make_input: Callable[[Path], Path], *extra: str, output: str = "mask.nii.gz"):
        def build(tmp: Path) -> list[str]:
            source = make_input(tmp)
            out = output.format(input=source) if "{input}" in output else str(tmp / output)
            return varprune("predict", "--model", str(model), "--input", str(source), "--output", out,
                            "--threads", "2", *extra)
        return build

    def oriented(code: str) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            stored = sitk.Flip(sitk.ReadImage(str(ct)), probes.FLIPS[code])
            sitk.WriteImage(stored, str(tmp / f"{code}.nii.gz"))
            return tmp / f"{code}.nii.gz"
        return make

    reference: dict[str, np.ndarray] = {}

    def agrees(code: str) -> Callable[[Path], str]:
        def check(tmp: Path) -> str:
            back = sitk.Resample(sitk.ReadImage(str(tmp / "mask.nii.gz")), sitk.ReadImage(str(ct)),
                                 sitk.Transform(), sitk.sitkNearestNeighbor)
            mask = sitk.GetArrayFromImage(back) > 0
            if code == "LPS":
                reference["LPS"] = mask
                return "" if mask.sum() > 100 else "empty mask"
            a, b = mask, reference.get("LPS", np.zeros_like(mask))
            dice = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
            return "" if dice >= 0.99 else f"Dice vs LPS {dice:.3f}"
        return check

    def float_ct(fill: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            image = sitk.Cast(sitk.ReadImage(str(ct)), sitk.sitkFloat32)
            out = sitk.GetImageFromArray(fill(sitk.GetArrayFromImage(image)))
            out.CopyInformation(image)
            sitk.WriteImage(out, str(tmp / name))
            return tmp / name
        return make

    def all_nan(values: np.ndarray) -> np.ndarray:
        return np.full_like(values, np.nan)

    def trace(values: np.ndarray) -> np.ndarray:
        values.flat[:3] = [np.nan, np.inf, -np.inf]
        return values

    def series(keep: int) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            with zipfile.ZipFile(archive) as outer:
                wanted = f"3Dircadb1.{patient}/PATIENT_DICOM.zip"
                inner = next(n for n in outer.namelist() if n.endswith(wanted))
                with zipfile.ZipFile(io.BytesIO(outer.read(inner))) as zf:
                    names = sorted((n for n in zf.namelist() if probes.is_slice(n)), key=probes.slice_number)
                    folder = tmp / f"series{keep}"
                    folder.mkdir()
                    for name in names[len(names) // 2: len(names) // 2 + keep]:
                        (folder / Path(name).name).write_bytes(zf.read(name))
            return folder
        return make

    def hostile_pickle(tmp: Path) -> list[str]:
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {tmp / 'pwned'}",))
        (tmp / "evil.pt").write_bytes(pickle.dumps({"spec": {}, "state_dict": Payload()}))
        return varprune("predict", "--model", str(tmp / "evil.pt"), "--input", str(ct),
                        "--output", str(tmp / "mask.nii.gz"))

    def huge_spec(tmp: Path) -> list[str]:
        spec = torch.load(model, map_location="cpu", weights_only=True)["spec"]
        torch.save({"spec": {**spec, "hidden": 8192, "heads": 8, "ffn": 65536, "layers": []},
                    "state_dict": {}, "provenance": {}}, tmp / "huge.pt")
        return varprune("inspect", str(tmp / "huge.pt"))

    def not_pwned(tmp: Path) -> str:
        return "payload ran" if (tmp / "pwned").exists() else ""

    def config(change: dict) -> Callable[[Path], list[str]]:
        def build(tmp: Path) -> list[str]:
            (tmp / "c.yaml").write_text(yaml.safe_dump(change))
            return [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory",
                    str(tmp / "work"), "--snakefile", str(REPO / "Snakefile"), "--configfile",
                    str(REPO / "config" / "config.yaml"), str(tmp / "c.yaml")]
        return build

    def not_a_zip(tmp: Path) -> list[str]:
        (tmp / "in.zip").write_text("hello")
        return varprune("convert", str(tmp / "in.zip"), str(tmp / "out"))

    def nifti(tmp: Path) -> Path:
        return ct

    reference_meta = json.loads((ct.parent / "meta.json").read_text())

    def tilt_volume(degrees: float) -> Callable[[Path], str]:
        def check(tmp: Path) -> str:
            meta = json.loads((tmp / "out" / case / "meta.json").read_text())
            expected = reference_meta["liver_volume_ml"] * np.cos(np.radians(degrees))
            error = meta["liver_volume_ml"] / expected - 1
            return "" if abs(error) < 0.01 else f"liver volume off by {error:+.1%}"
        return check

    def tilted_folder(degrees: float) -> Callable[[Path], Path]:
        def make(tmp: Path) -> Path:
            edited = probes.archive_with(archive, tmp / "tilted.zip", patient, probes.tilted(degrees))
            return probes.ct_folder(edited, tmp / "tilted", patient)
        return make

    def two_series(tmp: Path) -> Path:
        other = next(p for p in range(1, 100) if p != patient)
        probes.ct_folder(archive, tmp / "two", patient)
        return probes.ct_folder(archive, tmp / "two", other, prefix="other-")

    def made(build: Callable[[Path, Path], Path], name: str) -> Callable[[Path], Path]:
        return lambda tmp: build(ct, tmp / name)

    def uncompressed(tmp: Path) -> Path:
        return probes.write_nifti(tmp / "full.nii", *probes.nifti_bytes(ct))

    def garbage(tmp: Path) -> Path:
        (tmp / "scan.nrrd").write_text("<html>login page</html>")
        return tmp / "scan.nrrd"

    def sidecar(check_name: str | None) -> Callable[[Path], str]:
        def check(tmp: Path) -> str:
            warnings = json.loads((tmp / "mask.json").read_text())["warnings"]
            names = [w["check"] for w in warnings]
            if check_name is None:
                return "" if not names else f"warnings {names}"
            return "" if check_name in names else f"no {check_name} warning (got {names})"
        return check

    def limited(kb: int, argv: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        """The command under `ulimit -f kb`: the file-size limit hits while it writes (its messages
        go through a pipe to an unlimited `cat`, so that they are not cut by the limit)."""
        script = f'(ulimit -f {kb} && exec "$@") 2>&1 | cat; exit "${{PIPESTATUS[0]}}"'
        return lambda tmp: ["bash", "-c", script, "limited", *argv(tmp)]

    def export(tmp: Path) -> list[str]:
        return varprune("export", "--model", str(model), "--format", "onnx", "--output", str(tmp / "m.onnx"))

    unscaled = probes.drop("RescaleIntercept", "RescaleSlope")
    itk_location = (".cxx:", ".hxx:", "sitk::ERROR")
    return [
        Probe("archive: truncated to 60 %", truncated(False), 1, "is not a readable zip"),
        Probe("archive: truncated after an inner zip", truncated(True), 1, "holds no"),
        Probe("archive: damaged deflate stream", convert_inner(probes.corrupt_deflate), 1,
              f"{case}: 3Dircadb1/3Dircadb1.{patient}/PATIENT_DICOM.zip is a corrupt zip"),
        Probe("archive: zip bomb (100 MB of zeros)", convert_inner(probes.bomb), 1,
              "would unpack to 100 MB", limit_mb=MEMORY_LIMIT_MB),
        Probe("archive: symbolic link member", convert_inner(probes.link_member), 1, "symbolic link"),
        Probe("archive: not a zip", not_a_zip, 1, "not a readable zip"),
        Probe("dicom: no RescaleIntercept/Slope", convert(unscaled), 1, "no RescaleIntercept (0028,1052)"),
        Probe("dicom: same, --assume-hu", convert(unscaled, False, "--assume-hu"), 0, "assume_hu is set",
              leaves=[f"out/{case}/ct.nii.gz"]),
        Probe("dicom: no PixelSpacing on one slice", convert(probes.drop("PixelSpacing", only=3)), 1,
              "no PixelSpacing (0028,0030)"),
        Probe("dicom: no ImagePositionPatient", convert(probes.drop("ImagePositionPatient", only=5)), 1,
              "no ImagePositionPatient (0020,0032)"),
        Probe("dicom: a missing slice", convert(probes.without_slice(5), True), 1, "slice gap"),
        Probe("dicom: two slices at one position", convert(probes.same_position(6, as_slice=5)), 1,
              "two slices at the same position"),
        Probe("dicom: modality MR", convert(probes.set_tag("Modality", "MR")), 1, "is MR, not CT"),
        *[Probe(f"orientation: NIfTI stored {code}", predict(oriented(code)), 0, leaves=["mask.nii.gz"],
                check=agrees(code)) for code in probes.FLIPS],
        Probe("nan: all NaN (.mha)", predict(float_ct(all_nan, "nan.mha")), 1, "NaN or infinite"),
        Probe("nan: all NaN (.nii.gz, read as 0)", predict(float_ct(all_nan, "nan.nii.gz")), 1,
              "no air, so this is not a CT in HU"),
        Probe("nan: 3 voxels (.mha)", predict(float_ct(trace, "trace.mha")), 0, "replaced by air",
              leaves=["mask.nii.gz"]),
        Probe("thin: one-slice DICOM series", predict(series(1)), 0, leaves=["mask.nii.gz"]),
        Probe("thin: three-slice DICOM series", predict(series(3)), 0, leaves=["mask.nii.gz"]),
        Probe("checkpoint: pickle with a payload", hostile_pickle, 1, "not a readable varprune checkpoint",
              check=not_pwned),
        Probe("checkpoint: 2 kB file declaring a huge model", huge_spec, 1, "do not match the spec",
              limit_mb=MEMORY_LIMIT_MB),
        Probe("option: --output mask.png", predict(nifti, output="mask.png"), 1, "needs a NIfTI name"),
        Probe("option: --output = --input", predict(nifti, output="{input}"), 1, "would overwrite an input"),
        Probe("option: --threads -2", predict(nifti, "--threads", "-2"), 1, "--threads -2"),
        Probe("option: --batch-size 0", predict(nifti, "--batch-size", "0"), 1, "--batch-size 0"),
        Probe("option: --preview p.jpg", predict(nifti, "--preview", "p.jpg"), 1, "the preview is a PNG"),
        *([Probe("option: --device cuda, no GPU", predict(nifti, "--device", "cuda"), 1, "no CUDA GPU")]
          if not torch.cuda.is_available() else []),
        Probe("config: run '..'", config({"run": ".."}), 1, "run"),
        Probe("config: data.archive with synthetic", config({"data": {"archive": "x.zip"}}), 1,
              "is set but data.source is synthetic"),
        Probe("config: missing data.archive", config({"data": {"source": "ircadb", "archive": "/no/x.zip"}}),
              1, "no such file"),
        Probe("tilt: gantry 15 deg, convert", convert(probes.tilted(15.0), True), 0, "tilted 15.0 degrees",
              leaves=[f"out/{case}/ct.nii.gz"], check=tilt_volume(15.0)),
        Probe("tilt: gantry 30 deg, convert", convert(probes.tilted(30.0), True), 0, "tilted 30.0 degrees",
              leaves=[f"out/{case}/ct.nii.gz"], check=tilt_volume(30.0)),
        Probe("tilt: gantry 15 deg, predict", predict(tilted_folder(15.0)), 0, "tilted 15.0 degrees",
              leaves=["mask.nii.gz", "mask.json"]),
        Probe("series: two reconstructions, one UID", convert(probes.mixed_reconstructions), 1,
              "Two reconstructions under one SeriesInstanceUID"),
        Probe("series: interleaved in-plane origins", convert(probes.shifted_origins), 1,
              "not one reconstruction"),
        Probe("series: two in one folder", predict(two_series), 1, "choose one with --series (its number"),
        Probe("series: two in one folder, --series 2", predict(two_series, "--series", "2"), 0,
              leaves=["mask.nii.gz"]),
        Probe("nifti: sform and qform disagree", predict(made(probes.forms_disagree, "forms.nii.gz")), 1,
              "sform and qform disagree"),
        Probe("nifti: same, --nifti-geometry qform",
              predict(made(probes.forms_disagree, "forms.nii.gz"), "--nifti-geometry", "qform"), 0,
              leaves=["mask.nii.gz"], check=agrees("qform")),
        Probe("nifti: negative pixdim", predict(lambda tmp: probes.with_pixdim(ct, tmp / "n.nii.gz", -1.4)),
              1, "pixdim[1] is -1.4 (negative)"),
        Probe("nifti: zero pixdim", predict(lambda tmp: probes.with_pixdim(ct, tmp / "z.nii.gz", 0.0)), 1,
              "pixdim[1] is 0 (zero)"),
        Probe("nifti: .nii cut to 70 %", predict(lambda tmp: probes.cut(uncompressed(tmp), tmp / "c.nii")),
              1, "the file is cut short"),
        Probe("nifti: .nii.gz cut to 70 %", predict(made(probes.cut, "cut.nii.gz")), 1,
              "the file is cut short"),
        Probe("nifti: 4 kB file declaring 1.8 TB", predict(lambda tmp: probes.huge_header(tmp / "h.nii.gz")),
              1, "declares 900,000,000,000 voxels", limit_mb=MEMORY_LIMIT_MB),
        Probe("nifti: 2 kB file declaring 2 GB (fits the limit)",
              predict(lambda tmp: probes.huge_header(tmp / "h2.nii.gz", (1024, 1024, 1000))), 1,
              "the file is cut short", limit_mb=MEMORY_LIMIT_MB),
        Probe("itk: unreadable .nrrd", predict(garbage), 1, "cannot read (", not_in=itk_location),
        Probe("plausible: the test case, no warning", predict(nifti), 0, leaves=["mask.nii.gz", "mask.json"],
              check=sidecar(None)),
        Probe("plausible: child-sized body (x0.55)", predict(made(probes.scaled_in_plane, "child.nii.gz")), 0,
              "outside adult sizes", leaves=["mask.nii.gz", "mask.json"], check=sidecar("body_width")),
        Probe("fault: ulimit -f while export writes", limited(64, export), 1, "[Errno 27]"),
        Probe("fault: ulimit -f while predict writes", limited(4, predict(nifti)), 1, "[Errno 27]"),
    ]


def first_line(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "it/s" not in line]
    hit = [line for line in lines if needle and needle in line]
    return (hit or [line for line in lines if "rror" in line] or lines or [""])[-1].strip()[:110]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "results/default/dense/model.pt")
    parser.add_argument("--archive", type=Path, default=REPO / "data/raw/3Dircadb1.zip")
    parser.add_argument("--splits", type=Path, default=REPO / "data/splits.json")
    parser.add_argument("--only", help="run only the probes whose name contains this text")
    args = parser.parse_args()
    for path in (args.model, args.archive, args.splits):
        if not path.is_file():
            parser.exit(2, f"{path}: missing; run the default pipeline first (snakemake --cores all)\n")
    case = json.loads(args.splits.read_text())["test"][0]
    ct = REPO / "data" / "nifti" / case / "ct.nii.gz"
    rows = []
    for probe in probe_set(args.model, args.archive, case, ct):
        if args.only and args.only not in probe.name and "stored LPS" not in probe.name:
            continue  # (the LPS mask is the reference of the orientation checks)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            argv = probe.build(tmp)
            before = {p for p in tmp.rglob("*")}
            code, err, peak = run(argv, REPO)
            new = sorted(str(p.relative_to(tmp)) for p in set(tmp.rglob("*")) - before
                         if p.is_file() and p.name != "pwned" and "work/.snakemake" not in str(p))
            problems = []
            if (code == 0) != (probe.code == 0):
                problems.append(f"exit {code}")
            if probe.message and probe.message not in err:
                problems.append("message")
            problems += [f"shows {text!r}" for text in probe.not_in if text in err]
            if probe.code != 0 and new:
                problems.append("left output")
            problems += [f"missing {leaf}" for leaf in probe.leaves if not (tmp / leaf).is_file()]
            if probe.check is not None:
                problems += [p for p in [probe.check(tmp)] if p]
            if probe.limit_mb and peak > probe.limit_mb:
                problems.append(f"peak {peak:.0f} MB")
            verdict = "OK" if not problems else "FAIL: " + "; ".join(problems)
            rows.append({"input": probe.name, "exit": code, "message": first_line(err, probe.message),
                         "left behind": ", ".join(new)[:40] if probe.code != 0 else "-",
                         "peak MB": round(peak), "verdict": verdict})
            print(f"{probe.name}: {rows[-1]['verdict']}", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 110, "display.width", 250):
        print(table.to_markdown(index=False))
    failed = int((table.verdict != "OK").sum())
    print(f"\n{len(table) - failed} of {len(table)} probes OK")
    shutil.rmtree(REPO / ".snakemake" / "robustness", ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
