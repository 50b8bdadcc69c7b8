"""Snakemake script: a run's INT8 models, guarded, evaluated and timed. Logic: varprune.engine.quantize."""

from varprune.core.runlog import to_log_file
from varprune.engine.quantize import QuantizeSettings, int8_run

with to_log_file(snakemake.log[0]):
    models = dict(zip(snakemake.params.models,
                      zip(snakemake.input.checkpoints, snakemake.input.exports, strict=True), strict=True))
    int8_run(models, snakemake.input.train, snakemake.input.val, snakemake.input.test, snakemake.input.truth,
             QuantizeSettings.from_config(snakemake.params.quantize), snakemake.output[0],
             evaluate=snakemake.params.evaluate, cost=snakemake.params.cost,
             threads=snakemake.params.cost["threads"])
