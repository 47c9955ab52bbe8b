"""deepfm-bench: the engine (data pipeline, FeatureEmbedding, trainer, evaluator, runner, tuner, kernels)."""

__version__ = "0.1.0"
