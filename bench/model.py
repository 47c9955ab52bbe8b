"""The first plugin guide's module for models, kept working: `bench.model` moved to `bench.nn.model`.

Its `RankingModel` (a model over FeatureEmbedding with its equation in `head`, built as `Model(spec, fm_dim)`)
is today's `EmbeddingModel`. Importing this module warns once (FutureWarning) naming the new module; it will
go in deepfm-bench 0.3 (docs/plugins.md, "The compatibility promise").
"""

import warnings

from bench.nn.model import EmbeddingModel, FittedModel, known_matrix  # noqa: F401

RankingModel = EmbeddingModel

warnings.warn("bench.model is the old name of bench.nn.model, and its RankingModel (a model with a head) is "
              "bench.nn.model.EmbeddingModel now; the old names will go in deepfm-bench 0.3", FutureWarning,
              stacklevel=2)
