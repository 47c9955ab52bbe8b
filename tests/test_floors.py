"""The floors CI installs (.ci/floors.txt) are exactly the lowest versions pyproject.toml allows."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO
from packaging.version import Version


def test_the_floors_file_pins_every_floor_of_pyproject_and_nothing_else():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {m.group(1).lower(): Version(m.group(2)) for d in declared
              if (m := re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", d)) and m.group(1) != "torch"}
    pinned = {}
    for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[name.lower()] = Version(version)
    assert pinned == floors  # torch's floor is the one not installed: CI has only the local CPU build
