"""The first plugin guide's module for shared layers, kept working: `bench.layers` moved to `bench.nn.layers`.

Importing this module warns once (FutureWarning) naming the new module; it will go in deepfm-bench 0.3.
"""

import warnings

from bench.nn.layers import MLP, Dropout, Term, parse_widths  # noqa: F401

warnings.warn("bench.layers is the old name of bench.nn.layers; the old name will go in deepfm-bench 0.3",
              FutureWarning, stacklevel=2)
