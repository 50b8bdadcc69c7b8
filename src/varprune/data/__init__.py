"""The data layer: the IRCADb archive (real or synthetic), conversion, preprocessing, splits."""
