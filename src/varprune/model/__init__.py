"""The segmenters as data and as networks: specs, widths, closed-form MACs, building, running
and loading them (also as exported files)."""
