"""Evaluation of every model (dense and each pruning cycle): test metrics, size and MACs, and the
run's latency job."""


rule evaluate:
    input:
        model="results/{run}/{model}/model.pt",
        data=inputs.cases("test"),
        truth=inputs.cases("test", "data/nifti/{case}/liver.nii.gz"),
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
        **jobs.resources("evaluate"),
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
    resources:
        **jobs.resources("cost"),
    params:
        code=code_version("cost.py"),
    script:
        "../scripts/cost.py"


# Every model of a run (replicate) timed side by side in one job, eager and onnxruntime
# (varprune.engine.latency): timed in jobs of their own, latencies moved 10-25 % between jobs. With
# cost.alone the job reserves every core of a local run, so that no other job runs meanwhile.
rule latency:
    input:
        models=inputs.latency_inputs,
    output:
        "results/{run}/latency.csv",
    log:
        "logs/{run}/latency.log",
    benchmark:
        "logs/{run}/latency.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: jobs.timing_threads()
    resources:
        **jobs.resources("latency"),
    params:
        models=inputs.latency_models(),
        cost=cfg("cost"),
        code=code_version("latency.py"),
    script:
        "../scripts/latency.py"
