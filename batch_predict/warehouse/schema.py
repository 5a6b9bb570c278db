"""The warehouse's tables, written once: the DuckDB and PostgreSQL DDL, the Arrow schemas and the
column descriptions the Dagster UI shows all come from `tables`.

A table gains a column after its first release by adding it here: `ensure_schema` adds
the columns a table made earlier lacks. Probability columns (`proba_<class>`, named by
`contract.probability_column`) are the only ones added at run time, by the publish of a
model with a class not seen before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from batch_predict.contract import FeatureContract
from batch_predict.warehouse.connection import Params, Session
from batch_predict.warehouse.sql import ident
from batch_predict.warehouse.types import WarehouseError

# Logical type -> (DuckDB, PostgreSQL, Arrow).
TYPES: dict[str, tuple[str, str, pa.DataType]] = {
    # Byte order, as DuckDB compares text: the same ORDER BY and `<` on both backends, and cheaper
    # index maintenance than a locale's collation.
    "text": ("VARCHAR", 'text COLLATE "C"', pa.string()),
    "double": ("DOUBLE", "double precision", pa.float64()),
    "bigint": ("BIGINT", "bigint", pa.int64()),
    "integer": ("INTEGER", "integer", pa.int32()),
    "boolean": ("BOOLEAN", "boolean", pa.bool_()),
    "timestamptz": ("TIMESTAMPTZ", "timestamptz", pa.timestamp("us", tz="UTC")),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    description: str = ""
    not_null: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: str | None = None
    # Made on first use (loading labels, building the training set), not with the others.
    on_demand: bool = False
    # PostgreSQL indexes (column lists); DuckDB scans its column store instead.
    indexes: tuple[tuple[str, ...], ...] = ()

    def column_sql(self, dialect: str) -> list[str]:
        kind = 0 if dialect == "duckdb" else 1
        return [
            f"{ident(c.name)} {TYPES[c.kind][kind]}"
            + (" NOT NULL" if c.not_null else "")
            + (" PRIMARY KEY" if c.name == self.primary_key else "")
            for c in self.columns
        ]

    def create_sql(self, dialect: str) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(self.column_sql(dialect))})"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, TYPES[c.kind][2]) for c in self.columns])

    def names(self) -> list[str]:
        return [c.name for c in self.columns]


PREDICTION_BASE_COLUMNS = (
    Column("partition_key", "text", "The partition of the input record (inputs.partition_key)."),
    Column("record_id", "text", "The input record's id (inputs.record_id)."),
    Column("prediction", "text", "The predicted class: the one with the highest probability."),
    Column("model_name", "text", "Registered name of the model that predicted the row."),
    Column("model_version", "text", "Registry version of that model."),
    Column("run_id", "text", "The Dagster run that wrote the row."),
    Column("predicted_at", "timestamptz", "When the batch was predicted."),
    Column(
        "predicted_in_partition",
        "text",
        "The partition whose run predicted the record: another one for a carried record.",
    ),
)


def tables(contract: FeatureContract) -> tuple[Table, ...]:
    """Every table of a warehouse for this feature contract."""
    features = tuple(Column(name, "double", "Feature, finite.") for name in contract.features)
    return (
        Table(
            "inputs",
            (
                Column("partition_key", "text", "The partition the record's event time falls in.", not_null=True),
                Column("record_id", "text", f"Source column {contract.id_column}; unique.", not_null=True),
                Column("event_time", "timestamptz", f"Source column {contract.time_column}."),
                *features,
                Column("source_file", "text", "The file the record was read from."),
                Column("run_id", "text", "The Dagster run that snapshotted it."),
                Column("loaded_at", "timestamptz"),
            ),
            indexes=(("partition_key", "record_id"), ("record_id",)),
        ),
        Table(
            "rejected_inputs",
            (
                Column("partition_key", "text", not_null=True),
                Column("record_id", "text"),
                Column("event_time", "timestamptz"),
                Column("reason", "text", not_null=True),
                Column("detail", "text"),
                Column("raw_values", "text"),
                Column("source_file", "text"),
                Column("run_id", "text"),
                Column("rejected_at", "timestamptz"),
            ),
            indexes=(("partition_key",),),
        ),
        Table(
            "unplaced_inputs",
            (
                Column("record_id", "text"),
                Column("source_file", "text"),
                Column("reason", "text", not_null=True),
                Column("raw_event_time", "text"),
                Column("first_seen_at", "timestamptz"),
                Column("last_seen_run_id", "text"),
            ),
            indexes=(("source_file",),),
        ),
        Table(
            # Partitions snapshotted earlier that lack records they should hold now, and why: `late_file`, landed
            # rows of their window their snapshot lacks, as the newest snapshot found them (each snapshot
            # replaces these rows); `keeper_lost`, rows rejected as duplicates of a copy that no longer keeps
            # the record id, or keeps it though it sorts after them (kept until the partition runs again).
            "late_partitions",
            (
                Column("partition_key", "text"),
                Column("reason", "text"),
                Column("snapshot_rows", "bigint"),
                Column("landed_rows", "bigint"),
                # Landed rows of the window whose record id and event time the partition's snapshot lacks.
                Column("missing_rows", "bigint"),
                Column("checked_at", "timestamptz"),
                Column("checked_by_run", "text"),
            ),
        ),
        Table(
            "input_stats",
            (
                Column("partition_key", "text"),
                Column("window_start", "timestamptz"),
                Column("window_end", "timestamptz"),
                Column("source_rows", "bigint"),
                Column("valid_rows", "bigint"),
                Column("rejected_rows", "bigint"),
                Column("rejected_by_reason", "text"),
                Column("run_id", "text"),
                Column("loaded_at", "timestamptz"),
                # A digest of the landing rows in the window when it was snapshotted (Landing.window_digests).
                Column("landing_digest", "text"),
            ),
            primary_key="partition_key",
        ),
        Table("predictions", PREDICTION_BASE_COLUMNS, indexes=(("partition_key", "record_id"),)),
        Table(
            "predictions_history",
            (*PREDICTION_BASE_COLUMNS, Column("superseded_at", "timestamptz"), Column("superseded_by_run", "text")),
            indexes=(("partition_key", "record_id", "model_version"),),
        ),
        Table(
            "prediction_errors",
            (
                Column("partition_key", "text", not_null=True),
                Column("record_id", "text", not_null=True),
                Column("error", "text"),
                Column("attempt", "integer"),
                Column("dead", "boolean"),
                Column("attempted_in_partition", "text"),
                Column("run_id", "text"),
                Column("failed_at", "timestamptz"),
            ),
            indexes=(("partition_key", "record_id"), ("attempted_in_partition",)),
        ),
        Table(
            "prediction_quality",
            (
                Column("partition_key", "text"),
                Column("model_version", "text"),
                Column("labelled", "bigint"),
                Column("accuracy", "double"),
                Column("log_loss", "double"),
                Column("unknown_labels", "bigint"),
                Column("computed_at", "timestamptz"),
            ),
        ),
        Table(
            "prediction_drift",
            (
                Column("partition_key", "text"),
                Column("model_version", "text"),
                Column("kind", "text"),
                Column("name", "text"),
                Column("psi", "double"),
                Column("threshold", "double"),
                Column("n", "bigint"),
                Column("n_reference", "bigint"),
                Column("drifted", "boolean"),
                Column("computed_at", "timestamptz"),
            ),
        ),
        Table(
            "prediction_stats",
            (
                Column("partition_key", "text"),
                Column("mode", "text"),
                *(
                    Column(name, "bigint")
                    for name in (
                        "valid_inputs",
                        "succeeded",
                        "failed",
                        "dead",
                        "rejected",
                        "carried_in",
                        "run_predicted",
                        "run_failed",
                    )
                ),
                Column("model_name", "text"),
                Column("model_version", "text"),
                Column("run_id", "text"),
                Column("completed_at", "timestamptz"),
                Column("wall_seconds", "double"),
                Column("rows_per_second", "double"),
                Column("every_input_predicted", "boolean"),
                # The model versions of the partition's predictions now, sorted and comma-joined ('' for
                # none), kept by every statement that changes them, so that nothing scans `predictions`
                # for them (see `record_model_versions`).
                Column("model_versions", "text"),
            ),
            primary_key="partition_key",
        ),
        Table(
            "labels",
            (
                Column("record_id", "text"),
                Column("label", "text"),
                Column("source_file", "text"),
                Column("loaded_at", "timestamptz"),
            ),
            on_demand=True,
            indexes=(("record_id",),),
        ),
        Table(
            "training_set",
            (
                Column("partition_key", "text"),
                Column("record_id", "text"),
                Column("event_time", "timestamptz"),
                *features,
                Column("label", "text"),
                Column("split", "text"),
            ),
            on_demand=True,
        ),
    )


def table(contract: FeatureContract, name: str) -> Table:
    return next(t for t in tables(contract) if t.name == name)


def create(session: Session, spec: Table) -> None:
    """Make the table (and, in PostgreSQL, its indexes) if it does not exist yet."""
    session.execute(spec.create_sql(session.dialect))
    if session.dialect == "postgres":
        for columns in spec.indexes:
            name = f"{spec.name}_{'_'.join(columns)}_idx"
            session.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {spec.name} ({', '.join(columns)})")


def ensure_schema(session: Session, contract: FeatureContract, location: str) -> None:
    """Make the missing tables, add the columns a table made by an earlier release lacks, and fail if the
    inputs were built for other features."""
    with session.transaction():
        # Processes starting at once would race on CREATE TABLE (DuckDB's file lock already serializes them).
        session.lock_all()
        session.lock_schema()
        for spec in tables(contract):
            have = session.columns(spec.name)
            if not have and spec.on_demand:
                continue
            if not have:
                create(session, spec)
                continue
            if spec.name == "inputs":
                missing = [name for name in contract.features if name not in have]
                if missing:
                    raise WarehouseError(
                        f"The inputs table in {location} has no column(s) {', '.join(missing)} that "
                        "BATCH_PREDICT_FEATURES asks for: it was built for other features. Point "
                        "BATCH_PREDICT_WAREHOUSE at a new warehouse, or set BATCH_PREDICT_FEATURES back."
                    )
            for spec_column, sql in zip(spec.columns, spec.column_sql(session.dialect), strict=True):
                if spec_column.name not in have:
                    session.execute(f"ALTER TABLE {spec.name} ADD COLUMN {sql}")
                    if (spec.name, spec_column.name) == ("prediction_stats", "model_versions"):
                        record_model_versions(session, "true")  # a warehouse of an earlier release
        refresh_all_versions_view(session)


def model_versions_of(alias: str) -> str:
    """SQL aggregate of the rows `alias` of `predictions` to what `prediction_stats.model_versions` holds:
    their distinct versions, sorted and comma-joined, '' for none."""
    return f"coalesce(string_agg(DISTINCT {alias}.model_version, ',' ORDER BY {alias}.model_version), '')"


def record_model_versions(session: Session, scope: str, params: Params = None) -> None:
    """Set `prediction_stats.model_versions` of the partitions in `scope` (over `prediction_stats AS s`)
    from their predictions now: in the transaction of every statement that changes a partition's
    predictions, after it. A partition's index (PostgreSQL) or zone maps (DuckDB) serve the read."""
    session.execute(
        f"""
        UPDATE prediction_stats AS s SET model_versions = (
            SELECT {model_versions_of("v")} FROM predictions AS v WHERE v.partition_key = s.partition_key)
        WHERE {scope}
        """,
        params,
    )


def missing_probability_columns(session: Session, names: Sequence[str]) -> bool:
    """Whether `predictions` or `predictions_history` lacks one of the columns, or history lacks one of
    the current table's (a class of an earlier model, in a warehouse made before history existed)."""
    current, history = session.columns("predictions"), session.columns("predictions_history")
    return any(name not in current or name not in history for name in names) or any(
        name not in history for name in current
    )


def add_probability_columns(session: Session, names: Sequence[str]) -> None:
    """Add the probability columns of a model's classes to `predictions` and `predictions_history`, in a
    transaction of their own, before the publish that needs them.

    Writers of other partitions may add the same column at the same moment: the schema lock
    serializes them, and the columns are read again under it.
    """
    if not missing_probability_columns(session, names):
        return
    with session.transaction():
        session.lock_schema()
        alter_probability_columns(session, names)


def alter_probability_columns(session: Session, names: Sequence[str]) -> None:
    """In the session's transaction, add to both tables the columns of `names` and of `predictions` they lack."""
    if not missing_probability_columns(session, names):
        return
    double = TYPES["double"][0 if session.dialect == "duckdb" else 1]
    wanted = list(dict.fromkeys([*names, *session.columns("predictions")]))
    for table_name in ("predictions", "predictions_history"):
        have = session.columns(table_name)
        for name in wanted:
            if name not in have:
                session.execute(f"ALTER TABLE {table_name} ADD COLUMN {ident(name)} {double}")
    refresh_all_versions_view(session)


def refresh_all_versions_view(session: Session) -> None:
    """`predictions_all_versions`: every version's predictions of every partition, the current ones and
    those a re-prediction with another model superseded ("what did v3 say on that day")."""
    current = session.columns("predictions")
    history = session.columns("predictions_history")
    names = list(current) + [name for name in history if name not in current]
    timestamptz = TYPES["timestamptz"][0 if session.dialect == "duckdb" else 1]
    text = "CAST(NULL AS VARCHAR)" if session.dialect == "duckdb" else 'CAST(NULL AS text) COLLATE "C"'

    def side(have: dict[str, str], is_current: bool) -> str:
        picked = [
            ident(name) if name in have else f"CAST(NULL AS {history.get(name) or current[name]}) AS {ident(name)}"
            for name in names
            if name not in ("superseded_at", "superseded_by_run")
        ]
        extra = (
            f"true AS is_current, CAST(NULL AS {timestamptz}) AS superseded_at, {text} AS superseded_by_run"
            if is_current
            else "false AS is_current, superseded_at, superseded_by_run"
        )
        return f"SELECT {', '.join(picked)}, {extra} FROM {'predictions' if is_current else 'predictions_history'}"

    wanted = [name for name in names if name not in ("superseded_at", "superseded_by_run")]
    wanted += ["is_current", "superseded_at", "superseded_by_run"]
    if list(session.columns("predictions_all_versions")) == wanted:
        return  # made for these columns already (a rewrite is a catalog change every run would pay for)
    session.execute("DROP VIEW IF EXISTS predictions_all_versions")
    session.execute(f"CREATE VIEW predictions_all_versions AS {side(current, True)} UNION ALL {side(history, False)}")


def dagster_columns(spec: Table) -> list[tuple[str, str, str]]:
    """(name, type, description) of each column, as the Dagster UI's column schema shows them."""
    return [(c.name, TYPES[c.kind][0], c.description) for c in spec.columns]
