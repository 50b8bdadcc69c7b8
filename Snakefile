"""varprune: cross-layer channel pruning with variable pruning-rate sequences (see README.md)."""

from snakemake.utils import min_version

min_version("9.0")


configfile: workflow.source_path("config/config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/prune.smk"
include: "rules/controls.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
include: "rules/quantize.smk"


if GUARDED:

    include: "rules/guard.smk"

else:

    include: "rules/report.smk"


rule all:
    default_target: True
    input:
        inputs.final_outputs(),
