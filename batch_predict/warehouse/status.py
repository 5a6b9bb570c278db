"""Status reads: live per-partition counts from the stored inputs and outcomes, and the error ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from batch_predict.warehouse.connection import Session
from batch_predict.warehouse.drift_counts import DriftCounts


def _coverage_sql(session: Session) -> str:
    """CTEs ending in `coverage(partition_key, covered)`: for each partition of a CTE `keys`, whether
    the outcomes stored now (predictions plus recorded errors) cover its inputs stored now exactly.

    The two multisets of record ids are compared by their counts and sums of 64-bit hashes, as
    `Ledger._outcomes` decides its common case: one streaming aggregate per table over the given
    partitions, whatever their number.
    """
    tallies = ",\n".join(
        f"""
        cov_{table} AS (
            SELECT partition_key, count(*) AS n, sum({session.hash("record_id")}) AS h
            FROM {table} WHERE partition_key IN (SELECT partition_key FROM keys) GROUP BY partition_key
        )"""
        for table in ("inputs", "predictions", "prediction_errors")
    )
    return f"""{tallies},
        coverage AS (
            SELECT k.partition_key,
                   coalesce(i.n, 0) = coalesce(p.n, 0) + coalesce(e.n, 0)
                   AND coalesce(i.h, 0) = coalesce(p.h, 0) + coalesce(e.h, 0) AS covered
            FROM keys AS k
            LEFT JOIN cov_inputs AS i ON i.partition_key = k.partition_key
            LEFT JOIN cov_predictions AS p ON p.partition_key = k.partition_key
            LEFT JOIN cov_prediction_errors AS e ON e.partition_key = k.partition_key
        )
    """


class Status(DriftCounts):
    def deliveries(self, partition_keys: Sequence[str]) -> dict[str, tuple[datetime | None, bool | None]]:
        """Per partition: when its predictions were last published, and whether the outcomes stored
        now cover the inputs stored now (None when it was never published). A partition snapshotted
        again after its publish, with records that have no outcome yet, is not covered."""
        if not self.exists():
            return {}
        with self.session(read_only=True) as session:
            if not session.has_table("prediction_stats"):
                return {}
            rows = session.fetchall(
                f"""
                WITH keys AS (SELECT unnest(CAST($keys AS VARCHAR[])) AS partition_key),
                {_coverage_sql(session)}
                SELECT k.partition_key, s.completed_at,
                       CASE WHEN s.partition_key IS NOT NULL THEN c.covered END
                FROM keys AS k JOIN coverage AS c ON c.partition_key = k.partition_key
                LEFT JOIN prediction_stats AS s ON s.partition_key = k.partition_key
                """,
                {"keys": list(partition_keys)},
            )
        return {key: (completed_at, covered) for key, completed_at, covered in rows}

    def prediction_errors(self, partition_key: str | None, dead_only: bool, limit: int) -> list[dict[str, Any]]:
        """Rows of the error ledger, newest failure first."""
        with self.session(read_only=True) as session:
            return session.records(
                f"""
                SELECT partition_key, record_id, attempt, dead, attempted_in_partition, error, run_id, failed_at
                FROM prediction_errors
                WHERE {"partition_key = $partition_key" if partition_key is not None else "true"}
                  AND {"dead" if dead_only else "true"}
                ORDER BY failed_at DESC, partition_key, record_id
                LIMIT $limit
                """,
                {"partition_key": partition_key, "limit": limit} if partition_key is not None else {"limit": limit},
            )

    def most_common_error(self, partition_key: str, run_id: str) -> tuple[str, int] | None:
        """The error that the run's prediction of a partition recorded most often, and for how many records.

        Chunks resumed from a run that died carry that run's id, so if this run recorded
        none, the partition's ledger rows attempted in it answer instead.
        """

        def query(run_filter: str) -> str:
            return f"""
                SELECT error, count(*) AS n FROM prediction_errors
                WHERE attempted_in_partition = $p {run_filter}
                GROUP BY error ORDER BY n DESC, error LIMIT 1
            """

        with self.session(read_only=True) as session:
            row = session.fetchone(query("AND run_id = $run"), {"p": partition_key, "run": run_id})
            if row is None:
                row = session.fetchone(query(""), {"p": partition_key})
        return (str(row[0]), int(row[1])) if row else None

    def partition_status(self, last: int) -> list[dict[str, Any]]:
        """One dict per partition that has inputs or predictions, newest first, with live ledger counts.

        `predictions` and `failed` count the partition's own records wherever they were
        predicted; `carried_in` counts earlier partitions' records that this partition's
        run predicted or failed, `carried_out` this partition's records predicted by a
        later partition's run. For every partition: source_rows = rejected + predictions + failed.
        `every_input_predicted` compares the inputs and outcomes stored now (None if never
        published), so a snapshot taken after the last publish counts.
        """
        with self.session(read_only=True) as session:
            return session.records(
                f"""
                WITH keys AS (
                    SELECT partition_key FROM (
                        SELECT partition_key FROM input_stats UNION SELECT partition_key FROM prediction_stats
                    ) AS u ORDER BY partition_key DESC LIMIT $last
                ),
                {_coverage_sql(session)},
                own AS (
                    SELECT partition_key, count(*) AS n,
                           count(*) FILTER (WHERE predicted_in_partition <> partition_key) AS carried_out
                    FROM predictions WHERE partition_key IN (SELECT partition_key FROM keys) GROUP BY partition_key
                ),
                failures AS (
                    SELECT partition_key, count(*) AS n, count(*) FILTER (WHERE dead) AS dead
                    FROM prediction_errors WHERE partition_key IN (SELECT partition_key FROM keys)
                    GROUP BY partition_key
                ),
                carried AS (
                    SELECT attempted AS partition_key, count(*) AS n FROM (
                        SELECT predicted_in_partition AS attempted FROM predictions
                        WHERE predicted_in_partition <> partition_key
                        UNION ALL
                        SELECT attempted_in_partition FROM prediction_errors
                        WHERE attempted_in_partition <> partition_key) AS a
                    GROUP BY attempted
                )
                SELECT k.partition_key, i.window_start, i.window_end, i.source_rows, i.valid_rows AS inputs,
                       i.rejected_rows AS rejected, i.rejected_by_reason,
                       coalesce(own.n, 0) AS predictions, coalesce(failures.n, 0) AS failed,
                       coalesce(failures.dead, 0) AS dead, coalesce(carried.n, 0) AS carried_in,
                       coalesce(own.carried_out, 0) AS carried_out, s.mode,
                       s.model_name, s.model_version, coalesce(s.run_id, i.run_id) AS run_id,
                       coalesce(s.completed_at, i.loaded_at) AS updated_at,
                       s.completed_at, CASE WHEN s.partition_key IS NOT NULL THEN cov.covered END
                           AS every_input_predicted, s.rows_per_second
                FROM keys AS k
                JOIN coverage AS cov ON cov.partition_key = k.partition_key
                LEFT JOIN input_stats AS i ON i.partition_key = k.partition_key
                LEFT JOIN prediction_stats AS s ON s.partition_key = k.partition_key
                LEFT JOIN own ON own.partition_key = k.partition_key
                LEFT JOIN failures ON failures.partition_key = k.partition_key
                LEFT JOIN carried ON carried.partition_key = k.partition_key
                ORDER BY k.partition_key DESC
                """,
                {"last": last},
            )
