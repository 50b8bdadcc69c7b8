"""Tolerance-guarded cycles (pruning.schedule: guarded; varprune.pruning.guard): after each cycle
of a method the `guard` checkpoint judges its validation Dice against the reference fine-tuned
as often and plans the next cycle or ends the search; `select` hands over the last cycle within
tolerance; the guarded report reads the selected models only."""


rule reference_round:
    input:
        model=inputs.reference_parent,
        teacher=inputs.distill_teacher,
        splits=inputs.split_file,
        train=inputs.cases("train"),
        val=inputs.cases("val"),
    output:
        model="results/{run}/dense_long/round{k}/model.pt",
        log="results/{run}/dense_long/round{k}/train_log.csv",
    log:
        "logs/{run}/dense_long/round{k}/train.log",
    benchmark:
        "logs/{run}/dense_long/round{k}/train.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["finetune"]["threads"]
    resources:
        **jobs.resources("reference_round"),
    params:
        kind="dense_long",
        finetune=inputs.seeded("finetune"),
        # Round k: round k-1 fine-tuned once more, exactly as a pruning cycle is.
        rounds=1,
        state_dir=inputs.state_dir("dense_long/round{k}"),
        code=code_version("control.py"),
    script:
        "../scripts/control.py"


checkpoint guard:
    input:
        oneshot="results/{run}/{method}/cycle{k}/oneshot.json",
        cycle="results/{run}/{method}/cycle{k}/model.pt",
        reference=inputs.guard_reference,
        previous=inputs.earlier_decisions,
        fallback=inputs.guard_fallback,
        dense="results/{run}/dense/model.pt",
    output:
        "results/{run}/{method}/guard/cycle{k}.json",
    log:
        "logs/{run}/{method}/guard/cycle{k}.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("guard"),
    params:
        guard=cfg("pruning.guard"),
        pruning=inputs.oneshot_pruning,
        code=code_version("guard.py"),
    script:
        "../scripts/guard.py"


rule select:
    input:
        unpack(inputs.selection_inputs),
        dense="results/{run}/dense/model.pt",
    output:
        model="results/{run}/{method}/selected/model.pt",
        record="results/{run}/{method}/selected/selected.json",
    log:
        "logs/{run}/{method}/select.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("select"),
    params:
        code=code_version("select.py"),
    script:
        "../scripts/select.py"


rule report_guarded:
    input:
        unpack(inputs.guarded_report_inputs),
    output:
        table="results/{run}/report/guarded.csv",
        html="results/{run}/report/report.html",
        search=report(
            "results/{run}/report/figures/guarded.png",
            caption="../report/guarded.rst",
            category="Compression",
        ),
    log:
        "logs/{run}/report.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("report_guarded"),
    params:
        report=cfg("report"),
        config=policy.shown_config(config),
        code=code_version("report_guarded.py"),
    script:
        "../scripts/report_guarded.py"
