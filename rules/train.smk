"""Training of the dense segmenter."""


rule train:
    input:
        splits=inputs.split_file,
        train=inputs.cases("train"),
        val=inputs.cases("val"),
    output:
        model="results/{run}/dense/model.pt",
        log="results/{run}/dense/train_log.csv",
    log:
        "logs/{run}/dense/train.log",
    benchmark:
        "logs/{run}/dense/train.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["train"]["threads"]
    resources:
        **jobs.resources("train"),
    params:
        model=cfg("model"),
        train=inputs.seeded("train"),
        preprocess=cfg("preprocess"),
        # Resume state lives outside the outputs: Snakemake deletes a failed job's outputs.
        state_dir=inputs.state_dir("dense"),
        code=code_version("train.py"),
    script:
        "../scripts/train.py"
