"""Deployment files: the last (or, guarded, the selected) cycle of every method exported (ONNX
and/or TorchScript)."""


rule export:
    input:
        model="results/{run}/{model}/model.pt",
    output:
        "results/{run}/{model}/model.{fmt}",
    log:
        "logs/{run}/{model}/export_{fmt}.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("export"),
    params:
        code=code_version("export.py"),
    script:
        "../scripts/export.py"
