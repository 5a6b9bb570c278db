"""The names the folder registry accepts: versions (v1, v2, ...), aliases and registered names.

Aliases name files (aliases/<alias>.json); registered names are shown and compared. ASCII only,
no separators, not starting with a dot, and never "..": they cannot leave the registry folder.
"""

from __future__ import annotations

import re

from batch_predict.models.types import ModelError

VERSION_PATTERN = re.compile(r"v[0-9]{1,18}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def valid_name(text: str) -> bool:
    """Whether `text` may be an alias or a registered name."""
    return _NAME.fullmatch(text) is not None and ".." not in text


def check_name(text: str, what: str, fix: str = "") -> str:
    """`text` if it is a valid alias or registered name, else a ModelError naming `what` it is and the rule."""
    if not valid_name(text):
        raise ModelError(f"The {what} {text!r} is not allowed: use {NAME_RULE}.{' ' + fix if fix else ''}")
    return text


def check_version(text: str) -> str:
    """`text` if it is a version name (v1, v2, ...), else a ModelError."""
    if not isinstance(text, str) or VERSION_PATTERN.fullmatch(text) is None:
        raise ModelError(
            f"{text!r} is not a model version: versions are named v1, v2, ... (`batch-predict model list` shows them)."
        )
    return text
