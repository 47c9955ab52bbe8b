"""The first plugin guide's module for encoders, kept working: `bench.encoding` moved to `bench.data.encoding`.

Importing this module warns once (FutureWarning) naming the new module; it will go in deepfm-bench 0.3.
"""

import warnings

from bench.data.encoding import Encoder, check_encoder  # noqa: F401

warnings.warn("bench.encoding is the old name of bench.data.encoding; the old name will go in deepfm-bench 0.3",
              FutureWarning, stacklevel=2)
