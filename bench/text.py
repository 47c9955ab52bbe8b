"""Text from users and files made safe to print: control characters shown as escapes.

A model label, study name, path or file value can hold ANSI/OSC escapes, a BEL or a newline; printed raw,
such a value can clear the screen, retitle the terminal or forge an output line. Everything the commands
print that came from the user or a file goes through `printable` first.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL and C1 controls; `keep` lets a multi-line text keep its own newlines
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char, f"\\x{ord(char):02x}")


def printable(text: Any, newlines: bool = False) -> str:
    """`text` (any value, as str) with every control character escaped (`\\x1b`, `\\n`, ...); with `newlines`
    its line breaks are kept (a table or a multi-line message the program wrote itself)."""
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_escape, str(text))


def has_control(text: str) -> bool:
    return bool(_CONTROL.search(text))
