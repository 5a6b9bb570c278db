"""Credentials never leave the process in a message: `redact` masks them in URIs and in text quoting URIs.

Store URIs carry secrets (`http://user:secret@host:5000`, `postgresql://user:secret@host/db`,
`https://host/path?token=...`), and the libraries that use them repeat them in their own error
messages. Everything that shows a URI, or an error that may quote one, passes it through
`redact` first: the password (or a userinfo that is only a token) and the values of query
parameters whose names look secret become `***`; the scheme, user name, host, port and path
stay, so a message still says which store it is about.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : userinfo runs to the last "@" before the host part ends (a password
# typed with a raw "@" is still masked whole).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")
# key=value where the key names a secret: in a query string (?, &, ;), or standing alone as in
# libpq's "host=... password=...". The value runs to the next separator.
_SECRET_PARAMETER = re.compile(
    r"(?P<key>(?:^|[?&;\s])[^=&;#\s?]*(?:pass|pwd|token|secret|key|sig|credential|auth)[^=&;#\s?]*=)"
    r"[^&;#\s'\"<>]*",
    flags=re.IGNORECASE,
)

# The user names the examples in messages use: no secret, and masked they would garble the example.
_PLACEHOLDERS = frozenset({"user", "USER"})


def redact(text: str) -> str:
    """`text` (a URI, or a message quoting URIs) with passwords, tokens and secret query values masked."""
    return _SECRET_PARAMETER.sub(rf"\g<key>{MASK}", _USERINFO.sub(_mask_userinfo, text))


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    if not colon and user in _PLACEHOLDERS:
        return match[0]  # a message's example of the form (postgresql://user@host:port/database)
    # A userinfo without a password is often a token used as the user name (https://TOKEN@host).
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{shown}@"
