"""Drift counts: a partition's features and scores binned by the engine, and the drift results stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batch_predict.drift import bin_index_sql
from batch_predict.warehouse.labels import Labels
from batch_predict.warehouse.sql import ident
from batch_predict.warehouse.types import PredictionCounts


class DriftCounts(Labels):
    def feature_bin_counts(self, partition_key: str, edges: dict[str, list[float]]) -> dict[str, dict[int, int]]:
        """Per feature, how many of the partition's valid inputs fall in each bin of `edges` (right-closed).

        One scan of the partition: each feature's bin is a column, grouped by grouping sets.
        """
        if not edges:
            return {}
        names = list(edges)
        bins = ", ".join(f"{bin_index_sql(ident(name), edges[name])} AS b{i}" for i, name in enumerate(names))
        sets = ", ".join(f"(b{i})" for i in range(len(names)))
        columns = ", ".join(f"b{i}" for i in range(len(names)))
        flags = ", ".join(f"GROUPING(b{i})" for i in range(len(names)))
        with self.session(read_only=True) as session:
            session.fetch_into_engine(
                "drift_inputs",
                f"SELECT {', '.join(ident(name) for name in names)} FROM inputs WHERE partition_key = $p",
                {"p": partition_key},
            )
            rows = session.engine.execute(
                f"""
                SELECT {columns}, [{flags}] AS grouped_out, count(*)
                FROM (SELECT {bins} FROM drift_inputs)
                GROUP BY GROUPING SETS ({sets})
                """
            ).fetchall()
        counts: dict[str, dict[int, int]] = {name: {} for name in names}
        for row in rows:
            *values, grouped_out, n = row
            for i, name in enumerate(names):
                if not grouped_out[i] and values[i] is not None:
                    counts[name][int(values[i])] = int(n)
        return counts

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
        """Replace the partition's drift results in `prediction_drift`."""
        with self.session() as session, session.transaction():
            session.execute("DELETE FROM prediction_drift WHERE partition_key = $p", {"p": partition_key})
            for row in rows:
                session.execute(
                    """
                    INSERT INTO prediction_drift
                        (partition_key, model_version, kind, name, psi, threshold, n, n_reference, drifted, computed_at)
                    VALUES ($p, $version, $kind, $name, $psi, $threshold, $n, $n_reference, $drifted, now())
                    """,
                    {"p": partition_key, "version": model_version, **row},
                )
