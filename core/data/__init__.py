"""Training data before a run: load a dataset, measure it, and select rows by a recipe."""
