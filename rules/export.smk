"""Deployment files: the last cycle of every method exported (ONNX and/or TorchScript)."""


rule export:
    input:
        model="results/{run}/{method}/cycle{k}/model.pt",
    output:
        "results/{run}/{method}/cycle{k}/model.{fmt}",
    params:
        code=code_version("export.py"),
    log:
        "logs/{run}/{method}/cycle{k}/export_{fmt}.log",
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/varprune.yaml"
    script:
        "../scripts/export.py"
