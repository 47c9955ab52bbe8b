"""Built-in history encoders: how a model reads the user's history window."""
