"""Evaluation of every model (dense and each pruning cycle): test metrics and cost."""


rule evaluate:
    input:
        model="results/{run}/{model}/model.pt",
        data=expand("data/preprocessed/{case}.npz", case=TEST_CASES),
        truth=expand("data/nifti/{case}/liver.nii.gz", case=TEST_CASES),
    output:
        metrics="results/{run}/{model}/metrics.csv",
        pred=directory("results/{run}/{model}/pred"),
    log:
        "logs/{run}/{model}/evaluate.log",
    benchmark:
        "logs/{run}/{model}/evaluate.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["evaluate"]["threads"]
    resources:
        **job_resources("evaluate"),
    params:
        evaluate=cfg("evaluate"),
        code=code_version("evaluate.py"),
    script:
        "../scripts/evaluate.py"


rule cost:
    input:
        model="results/{run}/{model}/model.pt",
    output:
        "results/{run}/{model}/cost.json",
    log:
        "logs/{run}/{model}/cost.log",
    benchmark:
        "logs/{run}/{model}/cost.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    # Latency is timed with cost.threads; with cost.alone the job reserves every core of a
    # local run, so that no other job runs while it times (README: What the pipeline does, cost).
    threads: timing_threads()
    resources:
        **job_resources("cost"),
    params:
        cost=cfg("cost"),
        code=code_version("cost.py"),
    script:
        "../scripts/cost.py"
