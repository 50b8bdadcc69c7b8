"""Snakemake script: test-set metrics and predictions of one model. Logic: varprune.engine.evaluate."""

from varprune.core.runlog import to_log_file
from varprune.engine.evaluate import evaluate_checkpoint

with to_log_file(snakemake.log[0]):
    settings = snakemake.params.evaluate
    evaluate_checkpoint(
        model_path=snakemake.input.model,
        preprocessed=snakemake.input.data,
        truth=snakemake.input.truth,
        out_metrics=snakemake.output.metrics,
        out_pred_dir=snakemake.output.pred,
        batch_size=settings["batch_size"],
        device=settings["device"],
        interpolate=settings["interpolate"],
        largest_component=settings["largest_component"],
        threads=snakemake.threads,
        precision=settings.get("precision", "auto"),
    )
