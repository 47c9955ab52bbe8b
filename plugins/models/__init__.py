"""Built-in plugins, registered through entry points in pyproject.toml."""
