"""Pruning cycles: each (method, cycle) is its own job with its own checkpoint."""


rule prune_cycle:
    input:
        model=inputs.previous_model,
        teacher=inputs.distill_teacher,
        splits=inputs.split_file,
        train=inputs.cases("train"),
        val=inputs.cases("val"),
    output:
        model="results/{run}/{method}/cycle{k}/model.pt",
        sequence="results/{run}/{method}/cycle{k}/sequence.csv",
        log="results/{run}/{method}/cycle{k}/finetune_log.csv",
        oneshot="results/{run}/{method}/cycle{k}/oneshot.json",
    log:
        "logs/{run}/{method}/cycle{k}/prune.log",
    benchmark:
        "logs/{run}/{method}/cycle{k}/prune.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["finetune"]["threads"]
    resources:
        **jobs.resources("prune_cycle"),
    params:
        pruning=inputs.cycle_pruning,
        finetune=inputs.seeded("finetune"),
        state_dir=inputs.state_dir("{method}/cycle{k}"),
        code=code_version("prune_cycle.py"),
    script:
        "../scripts/prune_cycle.py"
