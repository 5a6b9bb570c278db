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
from urllib.parse import unquote

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


# A key that names a secret (password, sslpassword, pwd, a token), matched on its decoded name.
_SECRET_KEY = re.compile(r"pass(?!file)|pwd|secret|token", re.IGNORECASE)
# libpq's "key=value key=value" form: a value is quoted ('…' with \' inside; "…" as people type it) or runs to
# the next whitespace that is not escaped.
_KEYWORD_PAIR = re.compile(
    r"(?P<key>[a-z_][a-z0-9_]*)(?P<equals>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|\"[^\"]*\"?|(?:[^\s\\]|\\.)*)",
    re.IGNORECASE | re.DOTALL,
)
# What was typed for a scheme: postgresql however mistyped (postgresql:, postgresql//, postgresql ://), or
# any scheme followed by ":" and "/".
_SCHEME_LIKE = re.compile(r"^\s*(?:postgres(?:ql)?\s*:*\s*/*|[a-z][a-z0-9+.-]*\s*:+\s*/+)", re.IGNORECASE)


def redact_url(value: str, *, read_by_libpq: bool = False) -> str:
    """`value`, one database URL or libpq connection string however typed, with every character of its
    password masked. In a URL the userinfo runs from after the scheme (or what was typed for it) to the
    last "@", so a password holding "@", "/", "?", ":", quotes or spaces is masked whole. In the query,
    everything after a secret parameter's "=" is masked; with `read_by_libpq` (the URL passed the warehouse
    setting's check: libpq reads it, and its one raw "@" ends the userinfo) only up to the next "&", where
    libpq ends the value. In libpq's "key=value" form a secret key's value is masked whole, quoted or
    escaped. Stricter than `redact`, which must leave the text around a URI alone."""
    if re.match(r"\s*[a-z_][a-z0-9_]*\s*=", value, re.IGNORECASE) and "://" not in value:
        return redact(_KEYWORD_PAIR.sub(_mask_keyword, value))
    scheme = _SCHEME_LIKE.match(value)
    prefix = scheme[0] if scheme else ""
    userinfo, at, rest = value[len(prefix) :].rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:{MASK}" if colon else userinfo if userinfo in _PLACEHOLDERS else MASK  # as `redact` does
        head = f"{prefix}{shown}@"
    else:
        head, rest = "", value
    path, question, query = rest.partition("?")
    if question:
        parameters = []
        for parameter in query.split("&"):
            key, equals, _ = parameter.partition("=")
            if equals and _SECRET_KEY.search(unquote(key)):
                parameters.append(f"{key}={MASK}")
                if not read_by_libpq:
                    break  # typed by hand, the secret may hold an "&": nothing after it is shown
            else:
                parameters.append(parameter)
        rest = f"{path}?{'&'.join(parameters)}"
    return redact(head + rest)


def _mask_keyword(match: re.Match[str]) -> str:
    if not _SECRET_KEY.search(match["key"]):
        return match[0]
    return f"{match['key']}{match['equals']}{MASK}"
