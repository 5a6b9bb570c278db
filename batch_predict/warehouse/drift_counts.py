"""Drift counts: a partition's features and scores binned by the engine, and the drift results stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from batch_predict.drift import bin_index_sql
from batch_predict.warehouse.labels import Labels
from batch_predict.warehouse.sql import ident
from batch_predict.warehouse.types import PredictionCounts

# Rows per batch the engine hands to numpy when binning features.
_BATCH_ROWS = 65_536


class DriftCounts(Labels):
    def feature_bin_counts(self, partition_key: str, edges: dict[str, list[float]]) -> dict[str, dict[int, int]]:
        """Per feature, how many of the partition's valid inputs fall in each bin of `edges` (right-closed;
        NULL and NaN in none): the rows stream from the engine in batches and numpy bins them (`bin_counts`'s
        rule). A query binning every feature in SQL costs about 50 ms to plan, whatever the partition's size.
        """
        if not edges:
            return {}
        names = list(edges)
        cuts = [np.asarray(edges[name], dtype=np.float64) for name in names]
        totals = [np.zeros(len(cut) + 1, dtype=np.int64) for cut in cuts]
        with self.session(read_only=True) as session:
            session.fetch_into_engine(
                "drift_inputs",
                f"SELECT {', '.join(ident(name) for name in names)} FROM inputs WHERE partition_key = $p",
                {"p": partition_key},
            )
            doubles = ", ".join(f"CAST({ident(name)} AS DOUBLE)" for name in names)
            for batch in session.engine.sql(f"SELECT {doubles} FROM drift_inputs").to_arrow_reader(_BATCH_ROWS):
                for column, cut, total in zip(batch.columns, cuts, totals, strict=True):
                    values = column.to_numpy(zero_copy_only=False)  # NULL as NaN
                    values = values[~np.isnan(values)]
                    total += np.bincount(np.searchsorted(cut, values, side="left"), minlength=len(total))
        return {name: {i: int(n) for i, n in enumerate(total) if n} for name, total in zip(names, totals, strict=True)}

    def prediction_counts(
        self, partition_key: str, probability_columns: Sequence[str], score_edges: Sequence[float], model_version: str
    ) -> PredictionCounts:
        """The partition's predictions per class and per bin of the top-class probability (one scan), and
        the predictions per class of the newest earlier partition whose last run used the same model version
        (comparing two models' predictions would flag the model change, not drift)."""
        score = "greatest(" + ", ".join(ident(c) for c in probability_columns) + ")"
        with self.session(read_only=True) as session:
            session.fetch_into_engine(
                "drift_scores",
                f"SELECT prediction, {score} AS score FROM predictions WHERE partition_key = $p",
                {"p": partition_key},
            )
            rows = session.engine.execute(
                f"""
                SELECT prediction, bin, GROUPING(prediction) AS by_bin, count(*)
                FROM (SELECT prediction, {bin_index_sql("score", score_edges)} AS bin FROM drift_scores)
                GROUP BY GROUPING SETS ((prediction), (bin))
                """
            ).fetchall()
            [(previous,)] = session.fetchall(
                "SELECT max(partition_key) FROM prediction_stats WHERE partition_key < $p AND model_version = $v",
                {"p": partition_key, "v": model_version},
            )
            before = (
                session.fetchall(
                    "SELECT prediction, count(*) FROM predictions WHERE partition_key = $p GROUP BY prediction",
                    {"p": previous},
                )
                if previous is not None
                else []
            )
        return PredictionCounts(
            classes={str(label): int(n) for label, _, by_bin, n in rows if not by_bin},
            score_bins={int(b): int(n) for _, b, by_bin, n in rows if by_bin and b is not None},
            previous_partition=previous,
            previous_classes={str(label): int(n) for label, n in before},
        )

    def record_drift(self, partition_key: str, model_version: str, rows: list[dict[str, Any]]) -> None:
        """Replace the partition's drift results in `prediction_drift` (one INSERT for all of them)."""
        columns = ("kind", "name", "psi", "threshold", "n", "n_reference", "drifted")
        values = ", ".join(
            "($p, $version, " + ", ".join(f"${column}_{i}" for column in columns) + ", now())" for i in range(len(rows))
        )
        params: dict[str, Any] = {"p": partition_key, "version": model_version}
        for i, row in enumerate(rows):
            params.update({f"{column}_{i}": row[column] for column in columns})
        with self.session() as session, session.transaction():
            session.execute("DELETE FROM prediction_drift WHERE partition_key = $p", {"p": partition_key})
            if rows:
                session.execute(
                    "INSERT INTO prediction_drift (partition_key, model_version, kind, name, psi, threshold, n, "
                    f"n_reference, drifted, computed_at) VALUES {values}",
                    params,
                )
