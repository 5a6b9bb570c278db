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


# In one value meant as a database URL or libpq string: a key naming a secret (password=, sslpassword=, a
# query's ?password=) and its value, which runs to the next "key=" or the end, quotes and spaces included.
_SECRET_KEYWORD = re.compile(
    r"(?P<key>\b[a-z_]*(?:pass|pwd|secret|token)[a-z_]*\s*=\s*)(?P<value>.*?)(?=[\s&;]+[a-z_][a-z0-9_.-]*\s*=|$)",
    flags=re.IGNORECASE | re.DOTALL,
)
# What was typed for a scheme: postgresql however mistyped (postgresql:, postgresql//, postgresql ://), or
# any scheme followed by ":" and "/".
_SCHEME_LIKE = re.compile(r"^\s*(?:postgres(?:ql)?\s*:*\s*/*|[a-z][a-z0-9+.-]*\s*:+\s*/+)", re.IGNORECASE)


def redact_url(value: str) -> str:
    """`value`, one database URL or libpq connection string however typed, with every character of its
    password masked: the userinfo runs from after the scheme (or what was typed for it) to the last "@",
    so a password holding "@", "/", ":", quotes or spaces is masked whole, and a secret key's value runs
    to the next key. Stricter than `redact`, which must leave the text around a URI alone."""
    value = _SECRET_KEYWORD.sub(rf"\g<key>{MASK}", value)
    scheme = _SCHEME_LIKE.match(value)
    prefix = scheme[0] if scheme else ""
    userinfo, at, rest = value[len(prefix) :].rpartition("@")
    if not at:
        return redact(value)
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{MASK}" if colon else userinfo if userinfo in _PLACEHOLDERS else MASK  # as `redact` does
    return redact(f"{prefix}{shown}@{rest}")
