"""Neural building blocks: FeatureEmbedding, shared layers, the model contract, and the generic
composition of interaction plugins behind `bench run --interactions`."""
