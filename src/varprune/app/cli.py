"""The `varprune` command: use a trained model, and the data steps by hand.

`varprune predict` segments a CT with a checkpoint, `varprune export` writes ONNX or
TorchScript (verified against PyTorch), `varprune inspect` shows a checkpoint's per-layer spec,
size and provenance. `varprune synthesize`, `download` and `convert` call the same library code
as the pipeline's rules, for users who want one step (say, to check a downloaded archive).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from varprune import __version__


def _synthesize(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise SystemExit(f"varprune synthesize: --workers must be at least 1, got {args.workers}")
    from varprune.data.synthetic import SyntheticSpec, write_synthetic_archive

    write_synthetic_archive(
        args.output,
        SyntheticSpec(
            patients=args.patients,
            size=args.size,
            slices_min=args.slices_min,
            slices_max=args.slices_max,
            seed=args.seed,
        ),
        workers=args.workers,
    )


def _download(args: argparse.Namespace) -> None:
    from varprune.data.download import download_archive

    patients = download_archive(args.url, args.output, retries=args.retries)
    print(f"{args.output}: {len(patients)} patients")


def _convert(args: argparse.Namespace) -> None:
    from varprune.data.archive import case_id
    from varprune.data.convert import convert_case
    from varprune.data.download import validate_archive

    patients = args.patients or validate_archive(args.archive)  # a truncated archive holds none
    for patient in patients:
        case = case_id(patient)
        meta = convert_case(args.archive, case, f"{args.output}/{case}", assume_hu=args.assume_hu)
        print(
            f"{case}: {meta['slices']} slices, spacing {meta['spacing_mm']} mm, "
            f"liver {meta['liver_volume_ml']} ml, structures {', '.join(meta['structures'])}"
        )


def _predict(args: argparse.Namespace) -> None:
    from varprune.app.predict import predict

    result = predict(args.model, args.input, args.output, preview=args.preview, series=args.series,
                     device=args.device, threads=args.threads, batch_size=args.batch_size,
                     largest_component=not args.no_largest_component, assume_hu=args.assume_hu,
                     precision=args.precision, nifti_geometry=args.nifti_geometry)
    warned = f", {len(result['warnings'])} warning(s)" if result["warnings"] else ""
    print(f"{result['output']}: liver {result['liver_ml']:.1f} ml, grid {result['size']}{warned}")


def _export(args: argparse.Namespace) -> None:
    from varprune.engine.export import ExportError, export_model

    if args.quantize and args.format != "onnx":
        raise ExportError(f"--quantize {args.quantize}: INT8 models are ONNX; use --format onnx")
    if args.quantize and not args.data:
        raise ExportError("--quantize int8 needs --data: the folder of the preprocessed cases "
                          "(e.g. data/preprocessed), whose training cases calibrate it and whose "
                          "validation cases guard it")
    if args.quantize:
        settings = _quantize_settings(args)  # bad settings fail before anything is written
    result = export_model(args.model, args.format, args.output)
    print(f"{args.output}: {result['format']}, {result['bytes'] / 1e6:.1f} MB, "
          f"max difference to PyTorch {result['max_abs_difference']:.1e}")
    if args.quantize:
        from varprune.engine.quantize import int8_path, quantize_export

        train, val = _split_volumes(args.model, args.data)
        out = int8_path(args.output)
        record = quantize_export(args.output, out, train, val, settings, threads=args.threads)
        print(f"{out}: INT8 ({record['mode']}), {record['bytes_int8'] / 1e6:.1f} MB, validation Dice "
              f"{record['val_dice_int8']:.4f} (fp32 {record['val_dice_fp32']:.4f}) on "
              f"{', '.join(record['guard_cases'])}")


def _quantize_settings(args: argparse.Namespace):
    from varprune.engine.quantize import QuantizeSettings

    ops = QuantizeSettings().ops if args.quantize_ops is None else tuple(args.quantize_ops)
    return QuantizeSettings(mode=args.quantize_mode, ops=ops, max_dice_drop=args.max_dice_drop,
                            calibration_slices=args.calibration_slices)


def _split_volumes(model_path: str, data: str):
    """The training and validation volumes the checkpoint's provenance names, from `data`."""
    from pathlib import Path

    from varprune.data.datasets import case_paths, load_volumes
    from varprune.engine.export import ExportError
    from varprune.model.network import read_checkpoint

    split = read_checkpoint(model_path).get("provenance", {}).get("split") or {}
    if not split.get("train") or not split.get("val"):
        raise ExportError(f"{model_path}: its provenance names no training and validation cases; "
                          "INT8 calibration and its guard need them (the pipeline's checkpoints have them)")
    try:
        return tuple(load_volumes(case_paths(Path(data) / f"{case}.npz" for case in split[part]))
                     for part in ("train", "val"))
    except FileNotFoundError as err:
        raise ExportError(f"--data {data}: {err}") from err


def _inspect(args: argparse.Namespace) -> None:
    from varprune.engine.export import describe

    print(describe(args.model, with_macs=not args.no_macs))


def _results_page(args: argparse.Namespace) -> None:
    from varprune.report.results_page import write_results_page

    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
    write_results_page(args.report, args.output, title=args.title, notes=notes)
    print(f"wrote {args.output}")


def _config_docs(args: argparse.Namespace) -> None:
    from varprune.app.configdocs import update_page

    changed = update_page(args.page, args.schema)
    print(f"{'rewrote' if changed else 'unchanged:'} {args.page}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="varprune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"varprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthesize", help="write a synthetic cohort as 3Dircadb1.zip")
    p.add_argument("output", help="path of the zip to write")
    from varprune.data.synthetic import SyntheticSpec

    for name, field in SyntheticSpec.__dataclass_fields__.items():  # the defaults of config.yaml
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=field.default)
    p.add_argument("--workers", type=int, default=1, help="processes drawing patients (same archive for any)")
    p.set_defaults(func=_synthesize)

    p = sub.add_parser("download", help="download the 3D-IRCADb-01 archive (resumes)")
    p.add_argument("output", help="path of the zip to write, e.g. data/raw/3Dircadb1.zip")
    p.add_argument("--url", default="https://cloud.ircad.fr/index.php/s/JN3z7EynBiwYyjy/download")
    p.add_argument("--retries", type=int, default=5)
    p.set_defaults(func=_download)

    p = sub.add_parser("convert", help="convert patients of an archive to NIfTI")
    p.add_argument("archive", help="3Dircadb1.zip (real or synthetic) or a one-patient zip")
    p.add_argument("output", help="folder; each case goes to OUTPUT/ircadNN/")
    p.add_argument("--patients", type=int, nargs="+", help="patient numbers (default: all)")
    p.add_argument("--assume-hu", action="store_true",
                   help="take CT values without RescaleIntercept as HU (default: refuse them unless they "
                        "look like HU)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("predict", help="segment the liver of a CT with a checkpoint")
    p.add_argument("--model", required=True,
                   help="model.pt (PyTorch), model.onnx (onnxruntime, INT8 included) or model.torchscript: "
                        "the runtime follows the file")
    p.add_argument("--input", required=True,
                   help="DICOM series folder, NIfTI file, or IRCADb patient folder/zip (3Dircadb1.N)")
    p.add_argument("--output", required=True, help="NIfTI mask to write, on the input's grid")
    p.add_argument("--preview", help="PNG of a few axial slices with the contour")
    p.add_argument("--series", help="series UID or its number in the listed order, when the folder "
                   "holds several (the error lists them)")
    p.add_argument("--nifti-geometry", choices=["sform", "qform"],
                   help="which NIfTI geometry to follow when the file's sform and qform disagree "
                   "(refused otherwise)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads (torch, or onnxruntime for an .onnx model)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision (default auto: bf16 or fp16 on CUDA, fp32 on the CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--no-largest-component", action="store_true",
                   help="keep every predicted island (default: only the largest, the liver is one organ)")
    p.add_argument("--assume-hu", action="store_true",
                   help="take the values of a DICOM series without RescaleIntercept as HU (default: refuse "
                        "them unless they look like HU)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (verified)")
    p.add_argument("--model", required=True)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--output", required=True)
    p.add_argument("--quantize", choices=["int8"],
                   help="also write an INT8 model next to the ONNX export (OUTPUT.int8.onnx), calibrated on "
                        "the checkpoint's training cases and refused if its validation Dice falls more than "
                        "--max-dice-drop below the fp32 model's")
    p.add_argument("--data", help="folder of preprocessed cases ({case}.npz), for --quantize")
    p.add_argument("--quantize-mode", choices=["static", "dynamic"], default="dynamic",
                   help="dynamic (default, fastest measured): activation ranges per call; static: int8 "
                        "activations calibrated on training slices")
    p.add_argument("--max-dice-drop", type=float, default=0.005,
                   help="largest validation Dice loss allowed to INT8 (default 0.005: half a point)")
    p.add_argument("--quantize-ops", nargs="+", choices=["MatMul", "Gemm", "Conv"],
                   help="operators to quantize (default MatMul Gemm)")
    p.add_argument("--calibration-slices", type=int, default=64,
                   help="training slices that calibrate static INT8")
    p.add_argument("--threads", type=int, help="onnxruntime threads of the guard's validation")
    p.set_defaults(func=_export)

    p = sub.add_parser("inspect", help="per-layer spec, size, MACs and provenance of a checkpoint")
    p.add_argument("model")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("results-page", help="a dated Markdown page of a run's results (docs/results/)")
    p.add_argument("report", help="a run's report folder, e.g. results/default/report")
    p.add_argument("-o", "--output", required=True, help="the Markdown file to write")
    p.add_argument("--title", help="the page's title (default: Results of run RUN)")
    p.add_argument("--notes", help="a Markdown file whose text goes under the stamp (how the run was made)")
    p.set_defaults(func=_results_page)

    p = sub.add_parser("config-docs", help="rewrite a docs page's configuration reference from the schema")
    p.add_argument("page", nargs="?", default="docs/configuration.md", help="default: docs/configuration.md")
    p.add_argument("--schema", default="config/schema.yaml", help="default: config/schema.yaml")
    p.set_defaults(func=_config_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors are printed as one line and give exit code 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from varprune.app.predict import InputError
    from varprune.data.archive import ArchiveError
    from varprune.data.download import DownloadError
    from varprune.data.preprocess import PreprocessError
    from varprune.engine.export import ExportError
    from varprune.engine.quantize import QuantizationRefused
    from varprune.model.network import CheckpointError

    try:
        args.func(args)
    except (ArchiveError, DownloadError, PreprocessError, CheckpointError, InputError, ExportError,
            QuantizationRefused, ValueError, OSError) as err:
        print(f"varprune {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
