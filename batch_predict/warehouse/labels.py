"""Labels, the training set and realized quality: what the outcomes turned out to be."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from batch_predict.contract import probability_column
from batch_predict.warehouse import schema
from batch_predict.warehouse.connection import Session
from batch_predict.warehouse.landing import SOURCE_FILE_COLUMN, Source
from batch_predict.warehouse.ledger import Ledger
from batch_predict.warehouse.sql import ident, literal, record_id_sql
from batch_predict.warehouse.types import LabelStats, SourceError, WarehouseError


class Labels(Ledger):
    def load_labels(self, source: Source, label_column: str) -> LabelStats:
        """Replace the `labels` table with the label files' rows, one label per record id.

        Every row read is accounted for: kept, missing its record id or label, or
        superseded by a later file's label for the same record (files are read in path
        order, so a correction delivered later wins).
        """
        id_column = self.contract.id_column
        if not source.root.is_dir():
            raise SourceError(
                f"The labels folder {source.root} does not exist. Put label files there (columns {id_column}, "
                f"{label_column}; `batch-predict demo-data` writes demo labels), or set BATCH_PREDICT_LABELS."
            )
        relation = self.landing.source_relation(source)
        with self.session() as session:
            engine = session.engine
            try:
                described = engine.execute(f"DESCRIBE SELECT * FROM {relation}", {"pattern": source.pattern}).fetchall()
            except duckdb.Error as error:
                raise SourceError(
                    f"Cannot read the label files {source.pattern}: {str(error).splitlines()[0]}. "
                    "Add label files, fix or remove the unreadable one, or set BATCH_PREDICT_LABELS."
                ) from error
            types = {row[0]: str(row[1]) for row in described}
            for name, setting in ((id_column, "BATCH_PREDICT_ID_COLUMN"), (label_column, "BATCH_PREDICT_LABEL_COLUMN")):
                if name not in types:
                    raise SourceError(
                        f"The label files {source.pattern} have no column {name}. They need the record id "
                        f"({id_column}) and the label ({label_column}); set {setting} to the right column."
                    )
            # Ids as the inputs have them; a label row whose id is no integer counts as incomplete.
            record_id, non_integer_id = record_id_sql(ident(id_column))
            label = ident(label_column)
            if types[label_column] in ("DOUBLE", "FLOAT"):
                # 1.0 is the label 1 (pandas writes integer labels with a NULL among them as floats).
                label = (
                    f"CASE WHEN {label} = floor({label}) THEN CAST(CAST({label} AS BIGINT) AS VARCHAR) "
                    f"ELSE CAST({label} AS VARCHAR) END"
                )
            # Complete rows are ranked per record: the newest file wins, and in it the last row.
            engine.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE label_rows AS
                SELECT record_id, label, source_file,
                       CASE WHEN record_id IS NULL OR label IS NULL THEN NULL ELSE row_number() OVER (
                           PARTITION BY record_id, record_id IS NULL OR label IS NULL
                           ORDER BY source_file DESC, file_row_number DESC) END AS newest
                FROM (SELECT CASE WHEN {non_integer_id} THEN NULL ELSE {record_id} END AS record_id,
                             CAST({label} AS VARCHAR) AS label,
                             {ident(SOURCE_FILE_COLUMN)} AS source_file, file_row_number
                      FROM read_parquet($pattern, union_by_name = true, filename = {literal(SOURCE_FILE_COLUMN)},
                                        file_row_number = true, hive_partitioning = false))
                """,
                {"pattern": source.pattern},
            )
            session.share("label_rows")
            with session.transaction():
                schema.create(session, schema.table(self.contract, "labels"))
                session.execute("DELETE FROM labels")
                session.execute(
                    """
                    INSERT INTO labels (record_id, label, source_file, loaded_at)
                    SELECT record_id, label, source_file, now() FROM label_rows
                    WHERE record_id IS NOT NULL AND label IS NOT NULL AND newest = 1
                    """
                )
                [(read, kept, incomplete)] = session.fetchall(
                    """
                    SELECT count(*), (SELECT count(*) FROM labels),
                           count(*) FILTER (WHERE record_id IS NULL OR label IS NULL)
                    FROM label_rows
                    """
                )
                self._record_quality(session)
        return LabelStats(
            rows=int(read), kept=int(kept), incomplete=int(incomplete), superseded=int(read - kept - incomplete)
        )

    def _record_quality(self, session: Session, partition_key: str | None = None) -> None:
        """Realized quality per partition and model version, from the predictions whose labels have arrived.

        All partitions, or only `partition_key`. Accuracy counts a label the model does not
        know as wrong; log-loss leaves such rows out, with probabilities clipped to
        [eps, 1 - eps] as scikit-learn does.
        """
        columns = session.columns("predictions")
        labels = [row[0] for row in session.fetchall("SELECT DISTINCT label FROM labels ORDER BY 1")]
        known = {label: probability_column(label) for label in labels if probability_column(label) in columns}
        true_proba = (
            "CASE l.label " + " ".join(f"WHEN {literal(k)} THEN p.{ident(c)}" for k, c in known.items()) + " END"
            if known
            else f"CAST(NULL AS {schema.TYPES['double'][0 if session.dialect == 'duckdb' else 1]})"
        )
        eps = float(np.finfo(np.float64).eps)
        params = {"p": partition_key}
        where = "" if partition_key is None else "WHERE partition_key = $p"
        session.execute(f"DELETE FROM prediction_quality {where}", params if partition_key else None)
        session.execute(
            f"""
            INSERT INTO prediction_quality
                (partition_key, model_version, labelled, accuracy, log_loss, unknown_labels, computed_at)
            SELECT p.partition_key, p.model_version, count(*),
                   avg(CASE WHEN p.prediction = l.label THEN 1.0 ELSE 0.0 END),
                   -avg(ln(greatest(least({true_proba}, 1 - {eps!r}), {eps!r})))
                       FILTER (WHERE ({true_proba}) IS NOT NULL),
                   count(*) FILTER (WHERE ({true_proba}) IS NULL),
                   now()
            FROM predictions AS p JOIN labels AS l ON l.record_id = p.record_id
            {"" if partition_key is None else "WHERE p.partition_key = $p"}
            GROUP BY p.partition_key, p.model_version ORDER BY p.partition_key, p.model_version
            """,
            params if partition_key else None,
        )

    def refresh_quality(self, partition_key: str) -> dict[str, Any] | None:
        """Recompute one partition's realized quality (if labels were loaded) and return it for its newest version."""
        with self.session() as session:
            if not session.has_table("labels"):
                return None
            with session.transaction():
                self._record_quality(session, partition_key)
            rows = session.records(
                """
                SELECT q.* FROM prediction_quality AS q JOIN prediction_stats AS s
                  ON s.partition_key = q.partition_key AND s.model_version = q.model_version
                WHERE q.partition_key = $p
                """,
                {"p": partition_key},
            )
        return rows[0] if rows else None

    def drifted(self) -> dict[str, list[str]]:
        """Per partition, the distributions whose latest drift measurement passed its threshold."""
        with self.session(read_only=True) as session:
            if not session.has_table("prediction_drift"):
                return {}
            rows = session.fetchall(
                "SELECT partition_key, array_agg(name ORDER BY kind, name) FROM prediction_drift WHERE drifted "
                "GROUP BY partition_key"
            )
        return {key: list(names) for key, names in rows}

    def prediction_quality(self) -> list[dict[str, Any]]:
        """Realized accuracy and log-loss per partition and model version, newest partition first."""
        with self.session(read_only=True) as session:
            if not session.has_table("prediction_quality"):
                return []
            return session.records("SELECT * FROM prediction_quality ORDER BY partition_key DESC, model_version")

    def newest_labelled_event(self) -> datetime | None:
        """The event time of the newest valid input that has a label."""
        with self.session() as session:
            if not session.has_table("labels"):
                return None
            row = session.fetchone(
                "SELECT max(i.event_time) FROM inputs AS i JOIN labels AS l ON l.record_id = i.record_id"
            )
        return row[0] if row else None

    def build_training_set(self, train_start: datetime, holdout_start: datetime, end: datetime) -> dict[str, int]:
        """Replace `training_set` with the labelled valid inputs of [train_start, end), split at holdout_start."""
        features = ", ".join(f"i.{ident(f)}" for f in self.contract.features)
        spec = schema.table(self.contract, "training_set")
        with self.session() as session, session.transaction():
            if not session.has_table("labels"):
                schema.create(session, schema.table(self.contract, "labels"))
            session.execute("DROP TABLE IF EXISTS training_set")
            schema.create(session, spec)
            session.execute(
                f"""
                INSERT INTO training_set ({", ".join(ident(name) for name in spec.names())})
                SELECT i.partition_key, i.record_id, i.event_time, {features}, l.label,
                       CASE WHEN i.event_time < $holdout THEN 'train' ELSE 'holdout' END
                FROM inputs AS i JOIN labels AS l ON l.record_id = i.record_id
                WHERE i.event_time >= $start AND i.event_time < $end
                """,
                {"start": train_start, "holdout": holdout_start, "end": end},
            )
            rows = session.fetchall("SELECT split, count(*) FROM training_set GROUP BY split")
        return {"train": 0, "holdout": 0, **{split: int(n) for split, n in rows}}

    def training_set(self) -> pd.DataFrame:
        with self.session(read_only=True) as session:
            if not session.has_table("training_set"):
                raise WarehouseError("There is no training_set table yet: materialize the training_set asset first.")
            session.fetch_into_engine("training_rows", "SELECT * FROM training_set")
            return session.engine.execute("SELECT * FROM training_rows ORDER BY event_time, record_id").df()
