"""Drift counts: a partition's features and scores binned by the engine, and the drift results stored."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_predict.drift import bin_index_sql
from batch_predict.warehouse.labels import Labels
from batch_predict.warehouse.sql import ident, in_list
from batch_predict.warehouse.types import PredictionCounts

# Rows per batch the engine hands to numpy when binning features.
_BATCH_ROWS = 65_536


class DriftCounts(Labels):
    def feature_bin_counts(self, partition_key: str, edges: dict[str, list[float]]) -> dict[str, dict[int, int]]:
        """Per feature, how many of the partition's valid inputs fall in each bin of `edges`."""
        return self.feature_bin_counts_range([partition_key], edges)[partition_key]

    def feature_bin_counts_range(
        self, partition_keys: Sequence[str], edges: dict[str, list[float]]
    ) -> dict[str, dict[str, dict[int, int]]]:
        """Per partition and feature, how many of the partition's valid inputs fall in each bin of `edges`
        (right-closed; NULL and NaN in none): the rows of all the partitions stream from the engine in
        batches and numpy bins them (`bin_counts`'s rule). A query binning every feature in SQL costs
        about 50 ms to plan, whatever the partitions' size.
        """
        keys = list(partition_keys)
        if not edges:
            return {key: {} for key in keys}
        names = list(edges)
        cuts = [np.asarray(edges[name], dtype=np.float64) for name in names]
        # One row of counts per partition, one column per bin.
        totals = [np.zeros((len(keys), len(cut) + 1), dtype=np.int64) for cut in cuts]
        with self.session(read_only=True) as session:
            session.fetch_into_engine(
                "drift_inputs",
                f"SELECT partition_key, {', '.join(ident(name) for name in names)} FROM inputs "
                f"WHERE {in_list('partition_key', 'keys')}",
                {"keys": keys},
            )
            doubles = ", ".join(f"CAST({ident(name)} AS DOUBLE)" for name in names)
            query = f"SELECT partition_key, {doubles} FROM drift_inputs"
            for batch in session.engine.sql(query).to_arrow_reader(_BATCH_ROWS):
                rows = pc.index_in(batch.column(0), value_set=pa.array(keys, pa.string())).to_numpy()
                for column, cut, total in zip(batch.columns[1:], cuts, totals, strict=True):
                    values = column.to_numpy(zero_copy_only=False)  # NULL as NaN
                    valid = ~np.isnan(values)
                    cells = rows[valid] * total.shape[1] + np.searchsorted(cut, values[valid], side="left")
                    total += np.bincount(cells, minlength=total.size).reshape(total.shape)
        return {
            key: {
                name: {i: int(n) for i, n in enumerate(total[row]) if n}
                for name, total in zip(names, totals, strict=True)
            }
            for row, key in enumerate(keys)
        }

    def prediction_counts(
        self, partition_key: str, probability_columns: Sequence[str], score_edges: Sequence[float], model_version: str
    ) -> PredictionCounts:
        """The partition's predictions per class and per bin of the top-class probability, and the
        predictions per class of the newest earlier partition whose last run used the same model version."""
        return self.prediction_counts_range([partition_key], probability_columns, score_edges, model_version)[
            partition_key
        ]

    def prediction_counts_range(
        self,
        partition_keys: Sequence[str],
        probability_columns: Sequence[str],
        score_edges: Sequence[float],
        model_version: str,
    ) -> dict[str, PredictionCounts]:
        """Per partition: its predictions per class and per bin of the top-class probability (one scan for
        all of them), and the predictions per class of the newest earlier partition whose last run used the
        same model version (comparing two models' predictions would flag the model change, not drift)."""
        keys = list(partition_keys)
        score = "greatest(" + ", ".join(ident(c) for c in probability_columns) + ")"
        classes: dict[str, dict[str, int]] = {key: {} for key in keys}
        score_bins: dict[str, dict[int, int]] = {key: {} for key in keys}
        with self.session(read_only=True) as session:
            session.fetch_into_engine(
                "drift_scores",
                f"SELECT partition_key, prediction, {score} AS score FROM predictions "
                f"WHERE {in_list('partition_key', 'keys')}",
                {"keys": keys},
            )
            rows = session.engine.execute(
                f"""
                SELECT partition_key, prediction, bin, GROUPING(prediction) AS by_bin, count(*)
                FROM (SELECT partition_key, prediction, {bin_index_sql("score", score_edges)} AS bin FROM drift_scores)
                GROUP BY GROUPING SETS ((partition_key, prediction), (partition_key, bin))
                """
            ).fetchall()
            for key, label, index, by_bin, n in rows:
                if not by_bin:
                    classes[str(key)][str(label)] = int(n)
                elif index is not None:
                    score_bins[str(key)][int(index)] = int(n)
            # The partitions whose last run used this version, up to the newest of these partitions.
            stored = [
                str(key)
                for (key,) in session.fetchall(
                    "SELECT partition_key FROM prediction_stats WHERE partition_key < $last AND model_version = $v "
                    "ORDER BY partition_key",
                    {"last": max(keys), "v": model_version},
                )
            ]
            previous = {key: _newest_before(stored, key) for key in keys}
            elsewhere = sorted({p for p in previous.values() if p is not None and p not in classes})
            before: dict[str, dict[str, int]] = {key: {} for key in elsewhere}
            if elsewhere:
                for key, label, n in session.fetchall(
                    f"SELECT partition_key, prediction, count(*) FROM predictions "
                    f"WHERE {in_list('partition_key', 'keys')} GROUP BY partition_key, prediction",
                    {"keys": elsewhere},
                ):
                    before[str(key)][str(label)] = int(n)
        known = {**before, **classes}
        results = {}
        for key in keys:
            newest = previous[key]
            results[key] = PredictionCounts(
                classes=classes[key],
                score_bins=score_bins[key],
                previous_partition=newest,
                previous_classes=dict(known[newest]) if newest is not None else {},
            )
        return results

    def record_drift(self, partition_key: str, model_version: str, rows: list[dict[str, Any]]) -> None:
        """Replace the partition's drift results in `prediction_drift`."""
        self.record_drift_range({partition_key: (model_version, rows)})

    def record_drift_range(self, results: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
        """Replace the drift results in `prediction_drift` of each partition of `results` (partition key:
        model version and result rows), in one transaction."""
        columns = ("kind", "name", "psi", "threshold", "n", "n_reference", "drifted")
        flat = [(key, version, row) for key, (version, rows) in results.items() for row in rows]
        table = pa.table(
            {
                "partition_key": pa.array([key for key, _, _ in flat], pa.string()),
                "model_version": pa.array([version for _, version, _ in flat], pa.string()),
                **{
                    column: pa.array([row[column] for _, _, row in flat], kind)
                    for column, kind in zip(
                        columns,
                        (pa.string(), pa.string(), pa.float64(), pa.float64(), pa.int64(), pa.int64(), pa.bool_()),
                        strict=True,
                    )
                },
            }
        )
        with self.session() as session:
            session.adopt("drift_rows", table)
            with session.transaction():
                session.execute(
                    f"DELETE FROM prediction_drift WHERE {in_list('partition_key', 'keys')}", {"keys": list(results)}
                )
                session.execute(
                    "INSERT INTO prediction_drift (partition_key, model_version, kind, name, psi, threshold, n, "
                    f"n_reference, drifted, computed_at) SELECT partition_key, model_version, {', '.join(columns)}, "
                    "now() FROM drift_rows"
                )


def _newest_before(keys: Sequence[str], key: str) -> str | None:
    """The greatest of the sorted `keys` below `key`, if any."""
    at = bisect.bisect_left(keys, key)
    return keys[at - 1] if at else None
