"""Evaluation: ranking held-out items (evaluator), metrics with explicit ties, significance tests (stats)."""
