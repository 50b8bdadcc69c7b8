"""The run's report: summary table, figures, self-contained HTML."""


rule report:
    input:
        unpack(inputs.report_inputs),
    output:
        summary="results/{run}/report/summary.csv",
        html="results/{run}/report/report.html",
        comparison="results/{run}/report/comparison.csv",
        provenance="results/{run}/report/provenance.json",
        oneshot=report(
            "results/{run}/report/figures/oneshot.png",
            caption="../report/oneshot.rst",
            category="Compression",
        ),
        tradeoff=report(
            "results/{run}/report/figures/tradeoff.png",
            caption="../report/tradeoff.rst",
            category="Compression",
        ),
        sequence=report(
            "results/{run}/report/figures/sequence.png",
            caption="../report/sequence.rst",
            category="Variable sequences",
        ),
        widths=report(
            "results/{run}/report/figures/widths.png",
            caption="../report/widths.rst",
            category="Compression",
        ),
        curves=report(
            "results/{run}/report/figures/curves.png",
            caption="../report/curves.rst",
            category="Training",
        ),
        cases=report(
            "results/{run}/report/figures/cases.png",
            caption="../report/cases.rst",
            category="Segmentations",
        ),
    log:
        "logs/{run}/report.log",
    conda:
        "../envs/varprune.yaml"
    resources:
        **jobs.resources("report"),
    params:
        report=cfg("report"),
        config=policy.shown_config(config),
        code=code_version("report.py"),
    script:
        "../scripts/report.py"
