"""Training, splits, evaluation and the quality gate."""
