"""The `varprune` command: the data steps by hand, outside Snakemake.

`varprune synthesize`, `varprune download` and `varprune convert` call the same library code
as the pipeline's rules, for users who want one step (say, to check a downloaded archive).
"""

from __future__ import annotations

import argparse
import logging
import sys

from varprune import __version__


def _synthesize(args: argparse.Namespace) -> None:
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
    )


def _download(args: argparse.Namespace) -> None:
    from varprune.data.download import download_archive

    patients = download_archive(args.url, args.output, retries=args.retries)
    print(f"{args.output}: {len(patients)} patients")


def _convert(args: argparse.Namespace) -> None:
    from varprune.data.archive import case_id, list_patients, open_zip
    from varprune.data.convert import convert_case

    with open_zip(args.archive, "archive") as archive:
        patients = args.patients or list_patients(archive)
    for patient in patients:
        case = case_id(patient)
        meta = convert_case(args.archive, case, f"{args.output}/{case}")
        print(
            f"{case}: {meta['slices']} slices, spacing {meta['spacing_mm']} mm, "
            f"liver {meta['liver_volume_ml']} ml, structures {', '.join(meta['structures'])}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="varprune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"varprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthesize", help="write a synthetic cohort as 3Dircadb1.zip")
    p.add_argument("output", help="path of the zip to write")
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--slices-min", type=int, default=24)
    p.add_argument("--slices-max", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
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
    p.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors are printed as one line and give exit code 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from varprune.data.archive import ArchiveError
    from varprune.data.download import DownloadError
    from varprune.data.preprocess import PreprocessError

    try:
        args.func(args)
    except (ArchiveError, DownloadError, PreprocessError, ValueError, OSError) as err:
        print(f"varprune {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
