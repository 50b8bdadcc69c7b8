"""INT8 on top of pruning (export.quantize: int8; varprune.engine.quantize). One job per run quantizes
the ONNX export of dense and of every method's last cycle, keeps those whose validation Dice
stays within export.max_dice_drop, evaluates them on the test set and times each against its
fp32 export side by side. Which files exist depends on the guard, so the job's output is a
folder (results/{run}/int8/{model}/); a refused model leaves only its decision there."""


rule int8:
    input:
        checkpoints=inputs.int8_sources("model.pt"),
        exports=inputs.int8_sources("model.onnx"),
        train=inputs.cases("train"),
        val=inputs.cases("val"),
        test=inputs.cases("test"),
        truth=inputs.cases("test", "data/nifti/{case}/liver.nii.gz"),
    output:
        directory("results/{run}/int8"),
    log:
        "logs/{run}/int8.log",
    conda:
        "../envs/varprune.yaml"
    # It times latency, like `cost`: with cost.alone no other job runs meanwhile.
    threads: jobs.timing_threads()
    resources:
        **jobs.resources("export"),
    params:
        models=inputs.int8_models(),
        quantize=inputs.quantize_settings(),
        evaluate=cfg("evaluate"),
        cost=cfg("cost"),
        code=code_version("int8.py"),
    script:
        "../scripts/int8.py"
