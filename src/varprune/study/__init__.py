"""The study: replicates, paired statistics and the comparison of methods."""
