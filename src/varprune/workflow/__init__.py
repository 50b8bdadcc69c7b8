"""The workflow's glue, importable and testable without Snakemake: the config checks the
schema cannot express, run before any job (`checks`)."""
