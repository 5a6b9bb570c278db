"""SQL text built from names and settings: quoting, and the expressions both engines share.

Values (paths, partition keys, times, run ids) are always bound as parameters; only
column names from the validated feature contract and constants are written into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from batch_predict import contract as rules
from batch_predict.settings import FeatureRange

# What the parameter rewriting must read past: a quoted identifier (a column may be called `$1`, `%s`
# or `a"b`), a string literal and a comment (whose apostrophe is no quote); then a `$name` parameter
# and a `%`. Statements here use no dollar-quoted or backslash-escaped strings.
_SQL_TOKEN = re.compile(
    r"""(?P<quoted>"(?:[^"]|"")*"|'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/)"""
    r"""|\$(?P<parameter>[A-Za-z_][A-Za-z0-9_]*)|(?P<percent>%)""",
    re.DOTALL,
)


def ident(name: str) -> str:
    """A quoted identifier: any column name, written so that SQL reads it as a name."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rewrite(sql: str, parameter: Callable[[str], str], percent: str) -> str:
    """`sql` with each `$name` parameter outside quotes and comments replaced by `parameter(name)`, and
    every `%` (inside quotes too) by `percent`."""

    def replace(match: re.Match[str]) -> str:
        if match.group("quoted") is not None:
            return match.group("quoted").replace("%", percent)
        if match.group("parameter") is not None:
            return parameter(match.group("parameter"))
        return percent

    return _SQL_TOKEN.sub(replace, sql)


def parameter_names(sql: str) -> list[str]:
    """The `$name` parameters a statement uses, in order of first use; a `$` in a quoted name is no parameter."""
    names: list[str] = []

    def note(name: str) -> str:
        if name not in names:
            names.append(name)
        return name

    _rewrite(sql, note, "%")
    return names


def pyformat(sql: str) -> str:
    """`$name` parameters (DuckDB's style, in which the statements are written) as psycopg's `%(name)s`.

    psycopg reads every `%` of a statement given parameters, even one inside a quoted column
    name, so each is doubled; a `$` inside quotes is left alone. Send the result with
    parameters (psycopg undoes the doubling only then): see `postgres_statement`.
    """
    return _rewrite(sql, lambda name: f"%({name})s", "%%")


def postgres_statement(sql: str, params: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any] | None]:
    """A statement and its parameters as psycopg takes them: rewritten only when there are parameters,
    since without any psycopg sends the text as it is (a doubled `%` would stay doubled)."""
    if not params:
        return sql, None
    return pyformat(sql), params


def record_id_sql(column: str, text_numbers: bool = False, json: bool = False) -> tuple[str, str]:
    """DuckDB SQL giving a source id column's value as record-id text, and SQL true when it is no id at all.

    Ids are text. A column read as FLOAT or DOUBLE (pandas writes integer ids with a NULL
    among them as float64) gives integer text for integer values, so `12.0` is the record
    `12` of another file and of the labels. A fractional, infinite or NaN value, or one
    too large for a 128-bit integer, is no id: the second expression is true for it and
    the first keeps its text. Floats hold integers exactly only up to 2^53 (2^24 for FLOAT).

    With `text_numbers` (CSV, read as text), an id written as an integer-valued decimal
    (`12.0`, as pandas writes a float id column) is the integer `12` too; other text stays
    as written (`007`, `7.5`, `A-12`), since a text column may hold any id.

    With `json` (a column DuckDB reads as JSON, because JSON files give it values of several
    types), each value is judged by its own JSON type: a string is its text without the JSON
    quotes (`"5"` is the record `5`, as the number `5` is), a number as a number above, and
    `true`, an object or an array is no id.
    """
    if json:
        kind = f"json_type({column})"
        number = f"TRY_CAST(CAST({column} AS VARCHAR) AS DOUBLE)"
        integral = f"(isfinite({number}) AND {number} = trunc({number}) AND abs({number}) < 1e38)"
        text = (
            f"CASE WHEN {kind} = 'VARCHAR' THEN json_extract_string({column}, '$') "
            f"WHEN {kind} = 'NULL' THEN NULL "
            f"WHEN {kind} = 'DOUBLE' AND {integral} THEN CAST(CAST({number} AS HUGEINT) AS VARCHAR) "
            f"ELSE CAST({column} AS VARCHAR) END"
        )
        no_id = f"({kind} = 'DOUBLE' AND NOT {integral}) OR {kind} IN ('BOOLEAN', 'OBJECT', 'ARRAY')"
        return text, f"coalesce({no_id}, false)"
    if text_numbers:
        as_text = f"CAST({column} AS VARCHAR)"
        decimal = f"regexp_matches({as_text}, '^[+-]?[0-9]+\\.0+$')"
        return (
            f"CASE WHEN {decimal} THEN coalesce(CAST(TRY_CAST({as_text} AS HUGEINT) AS VARCHAR), {as_text}) "
            f"ELSE {as_text} END",
            "false",
        )
    is_float = f"typeof({column}) IN ('FLOAT', 'DOUBLE')"
    number = f"TRY_CAST({column} AS DOUBLE)"
    integral = f"(isfinite({number}) AND {number} = trunc({number}) AND abs({number}) < 1e38)"
    text = (
        f"CASE WHEN {is_float} AND {integral} THEN CAST(CAST({number} AS HUGEINT) AS VARCHAR) "
        f"ELSE CAST({column} AS VARCHAR) END"
    )
    return text, f"coalesce({is_float} AND NOT {integral}, false)"


def out_of_range_rule(bounds: FeatureRange) -> str:
    """A DuckDB `WHEN` of the verdict: the feature's value lies outside its inclusive plausibility range."""
    value = ident(bounds.feature)
    outside = " OR ".join(
        f"{value} {op} CAST({bound!r} AS DOUBLE)"
        for op, bound in (("<", bounds.low), (">", bounds.high))
        if bound is not None
    )
    detail = (
        f"{literal(bounds.feature + ' = ')} || CAST({value} AS VARCHAR) || "
        f"{literal(f', outside its range {bounds} (BATCH_PREDICT_FEATURE_RANGES)')}"
    )
    return f"WHEN {outside} THEN {{'reason': {literal(rules.OUT_OF_RANGE)}, 'detail': {detail}}}"


def in_list(column: str, parameter: str) -> str:
    """SQL true when `column` is one of the strings in the list parameter `$parameter` (both engines)."""
    return f"{column} IN (SELECT unnest(CAST(${parameter} AS VARCHAR[])))"
