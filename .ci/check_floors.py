"""Fail unless every package pinned in the floors file is installed at exactly that version."""

import sys
from importlib.metadata import version

wrong = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, _, pinned = line.partition("==")
        if version(name) != pinned:
            wrong.append(f"{name} {version(name)} (the floor is {pinned})")
if wrong:
    sys.exit("not at the floors: " + ", ".join(wrong))
print("floors installed: " + ", ".join(line.strip() for line in open(sys.argv[1]) if "==" in line))
