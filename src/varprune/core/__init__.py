"""Foundation: atomic files, run logs, code fingerprints, the checkout's library, precision, the
registry of pruning methods and the run's file contract (layout). Imports nothing above it."""
