"""Cross-layer channel pruning: criteria, rate sequences, surgery, cycles."""
