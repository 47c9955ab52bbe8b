"""Tuning with Optuna: search spaces (space), storages with heartbeats (storage), studies and their workers
(study), and the best parameters handed to `bench run --params best` (best)."""
