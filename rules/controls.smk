"""Reference models every comparison is read against (varprune.engine.controls, DESIGN.md)."""


rule dense_long:
    input:
        model="results/{run}/dense/model.pt",
        splits=inputs.split_file,
        train=inputs.cases("train"),
        val=inputs.cases("val"),
    output:
        model="results/{run}/dense_long/model.pt",
        log="results/{run}/dense_long/train_log.csv",
    log:
        "logs/{run}/dense_long/train.log",
    benchmark:
        "logs/{run}/dense_long/train.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["finetune"]["threads"]
    resources:
        **jobs.resources("dense_long", rounds=len(TARGETS)),
    params:
        finetune=inputs.seeded("finetune"),
        # One fine-tuning per pruning cycle: the extra training the last cycle of a method had.
        rounds=len(TARGETS),
        state_dir=inputs.state_dir("dense_long"),
        code=code_version("control.py"),
    script:
        "../scripts/control.py"


rule transformer_off:
    input:
        model="results/{run}/dense/model.pt",
        splits=inputs.split_file,
        train=inputs.cases("train"),
        val=inputs.cases("val"),
    output:
        model="results/{run}/transformer_off/model.pt",
        log="results/{run}/transformer_off/train_log.csv",
    log:
        "logs/{run}/transformer_off/train.log",
    benchmark:
        "logs/{run}/transformer_off/train.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["finetune"]["threads"]
    resources:
        **jobs.resources("transformer_off", rounds=len(TARGETS)),
    params:
        finetune=inputs.seeded("finetune"),
        # The same fine-tuning as dense_long: the headroom compares equal training.
        rounds=len(TARGETS),
        state_dir=inputs.state_dir("transformer_off"),
        code=code_version("control.py"),
    script:
        "../scripts/control.py"


rule oneshot:
    input:
        model="results/{run}/dense/model.pt",
        train=inputs.cases("train"),
        val=inputs.cases("val"),
        test=inputs.cases("test"),
    output:
        "results/{run}/oneshot.csv",
    log:
        "logs/{run}/oneshot.log",
    benchmark:
        "logs/{run}/oneshot.benchmark.tsv"
    conda:
        "../envs/varprune.yaml"
    threads: config["finetune"]["threads"]
    resources:
        **jobs.resources("oneshot"),
    params:
        methods=METHODS,
        pruning=inputs.oneshot_pruning,
        oneshot=cfg("oneshot"),
        device=config["finetune"]["device"],
        code=code_version("oneshot.py"),
    script:
        "../scripts/oneshot.py"
