"""compat-plugins: a third-party plugin package written to the forms the deepfm-bench plugin guide has documented,
frozen as written (not kept in step with the guide): tests/compat/test_compat.py installs it through entry points
and runs every plugin end to end."""
