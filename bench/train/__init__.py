"""Training: the trainer (BCE on sampled negatives, Adam, early stopping on validation)."""
