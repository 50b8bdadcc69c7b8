"""The `varprune` command: prediction, the configuration reference, deployment commands."""
