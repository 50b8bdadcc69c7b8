"""From the raw archive (downloaded, given, or synthesized) or NIfTI folders to split,
model-ready data."""

ARCHIVE = "data/raw/3Dircadb1.zip"


if config["data"]["source"] == "synthetic":

    rule synthesize:
        output:
            ARCHIVE,
        log:
            "logs/data/synthesize.log",
        benchmark:
            "logs/data/synthesize.benchmark.tsv"
        conda:
            "../envs/varprune.yaml"
        threads: 2  # patients drawn in parallel; a cluster node must have this many CPUs
        resources:
            **jobs.resources("synthesize"),
        params:
            synthetic=cfg("synthetic"),
            code=code_version("synthesize.py"),
        script:
            "../scripts/synthesize.py"

elif config["data"]["source"] == "nifti":

    # The label is a param, not an input: a case without one must fail alone, naming the file,
    # not stop the whole run at planning (MissingInputException).
    rule convert_nifti:
        input:
            image=lambda wildcards: NIFTI_CASES[wildcards.case][0],
        output:
            ct="data/nifti/{case}/ct.nii.gz",
            liver="data/nifti/{case}/liver.nii.gz",
            meta="data/nifti/{case}/meta.json",
        log:
            "logs/data/convert/{case}.log",
        benchmark:
            "logs/data/convert/{case}.benchmark.tsv"
        conda:
            "../envs/varprune.yaml"
        resources:
            **jobs.resources("convert"),
        params:
            label=lambda wildcards: str(NIFTI_CASES[wildcards.case][1]),
            liver_labels=cfg("data.nifti.liver_labels"),
            tumor_labels=cfg("data.nifti.tumor_labels"),
            assume_hu=cfg("data.assume_hu"),
            geometry=cfg("data.nifti.geometry"),
            code=code_version("convert_nifti.py"),
        script:
            "../scripts/convert_nifti.py"

elif config["data"]["archive"]:

    localrules:
        link_archive,

    rule link_archive:
        output:
            ARCHIVE,
        log:
            "logs/data/link_archive.log",
        conda:
            "../envs/varprune.yaml"
        params:
            archive=cfg("data.archive"),
            code=code_version("link_archive.py"),
        script:
            "../scripts/link_archive.py"

else:

    # Compute nodes often have no internet: the download runs where snakemake runs.
    localrules:
        download,

    rule download:
        output:
            ARCHIVE,
        log:
            "logs/data/download.log",
        benchmark:
            "logs/data/download.benchmark.tsv"
        conda:
            "../envs/varprune.yaml"
        params:
            url=cfg("data.url"),
            download=cfg("data.download"),
            code=code_version("download.py"),
        script:
            "../scripts/download.py"


if config["data"]["source"] != "nifti":

    rule convert:
        input:
            archive=ARCHIVE,
        output:
            ct="data/nifti/{case}/ct.nii.gz",
            liver="data/nifti/{case}/liver.nii.gz",
            meta="data/nifti/{case}/meta.json",
        log:
            "logs/data/convert/{case}.log",
        benchmark:
            "logs/data/convert/{case}.benchmark.tsv"
        conda:
            "../envs/varprune.yaml"
        resources:
            **jobs.resources("convert"),
        params:
            assume_hu=cfg("data.assume_hu"),
            extract=cfg("data.extract"),
            code=code_version("convert.py"),
        script:
            "../scripts/convert.py"


rule preprocess:
    input:
        ct="data/nifti/{case}/ct.nii.gz",
        liver="data/nifti/{case}/liver.nii.gz",
    output:
        "data/preprocessed/{case}.npz",
    log:
        "logs/data/preprocess/{case}.log",
    benchmark:
        "logs/data/preprocess/{case}.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("preprocess"),
    params:
        preprocess=cfg("preprocess"),
        assume_hu=cfg("data.assume_hu"),
        code=code_version("preprocess.py"),
    script:
        "../scripts/preprocess.py"


# The split depends on the case names only (CASES, known at parse time), not on their data.
# (Rules stay at the top level: Snakemake records a script rule's source line with its indentation,
# and a rule moved into a block reruns everything downstream of it.)
rule split:
    output:
        "data/splits.json",
    log:
        "logs/data/split.log",
    conda:
        "../envs/varprune.yaml"
    params:
        split=cfg("split"),
        cases=CASES,
        code=code_version("split.py"),
    script:
        "../scripts/split.py"


# replicates.folds: one split per fold, its test cases the fold (varprune.study.replicates).
rule split_fold:
    output:
        "data/splits/fold{fold}.json",
    log:
        "logs/data/split_fold{fold}.log",
    conda:
        "../envs/varprune.yaml"
    params:
        split=lambda wildcards: policy.canonical(
            case_plan.fold_split_config(config, int(wildcards.fold))
        ),
        cases=CASES,
        code=code_version("split.py"),
    script:
        "../scripts/split.py"
