"""The `bench` console command, before anything heavy is imported.

Importing the commands imports PyTorch, whose libraries map several hundred MB of address space: under a
small `ulimit -v` (or on a machine out of memory) that import fails deep inside torch with a traceback.
Here it is one line that says memory is short, and the exit status is 1.
"""

from __future__ import annotations

import sys

_SHORT_OF_MEMORY = ("failed to map segment", "cannot allocate memory", "out of memory", "std::bad_alloc")


def short_of_memory(exc: BaseException) -> bool:
    """Whether an import failed for want of memory or address space, not for a missing or broken module."""
    return isinstance(exc, MemoryError) or any(s in str(exc).lower() for s in _SHORT_OF_MEMORY)


def main() -> None:
    try:
        from bench.cli import main as command
    except (ImportError, OSError, MemoryError) as exc:
        if not short_of_memory(exc):
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"bench: not enough memory to start: loading PyTorch failed ({detail}); free memory or raise the "
              "address-space limit (ulimit -v)", file=sys.stderr)
        sys.exit(1)
    command()
