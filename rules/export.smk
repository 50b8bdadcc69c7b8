"""Deployment files: the last cycle of every method exported (ONNX and/or TorchScript)."""


rule export:
    input:
        model="results/{run}/{method}/cycle{k}/model.pt",
    output:
        "results/{run}/{method}/cycle{k}/model.{fmt}",
    log:
        "logs/{run}/{method}/cycle{k}/export_{fmt}.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        code=code_version("export.py"),
    script:
        "../scripts/export.py"
