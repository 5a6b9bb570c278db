"""Prediction publish and the ledger: every record's current outcome, a prediction or a recorded error."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from batch_predict.settings import OnFailure
from batch_predict.warehouse.connection import Session
from batch_predict.warehouse.schema import add_probability_columns, model_versions_of, record_model_versions
from batch_predict.warehouse.snapshots import Snapshots
from batch_predict.warehouse.sql import ident, in_list
from batch_predict.warehouse.types import (
    Completeness,
    PredictionRun,
    PublishResult,
    StagedOutcome,
    StagedPredictions,
)


@dataclass(frozen=True)
class _Tally:
    """A partition's outcomes as stored: its predictions, its recorded errors, and those of them dead."""

    predicted: int
    failed: int
    dead: int


class PartitionWork:
    """One partition's work, read in an open session: which input snapshot it is, and its records."""

    def __init__(self, session: Session, features: Sequence[str], partition_key: str) -> None:
        self._session = session
        self._features = features
        self.partition_key = partition_key
        row = session.fetchone(
            "SELECT run_id || '@' || CAST(loaded_at AS VARCHAR) FROM input_stats WHERE partition_key = $p",
            {"p": partition_key},
        )
        # An id of the partition's current input snapshot: the run that took it, and when.
        self.snapshot = str(row[0]) if row else "none"

    def records(self, *, only_unpredicted: bool, carry: bool) -> pa.RecordBatchReader:
        """The records a run of the partition must predict, streamed (read them before the session ends).

        Own records: every valid input of the partition, or with `only_unpredicted` only
        those without a prediction (failed or never tried). With `carry`, also the failed,
        not yet dead records of earlier partitions, each with the attempt number seen now
        so that publishing can tell whether another run settled it meanwhile. Columns:
        `partition_key`, `record_id`, the features, `attempt_seen`.
        """
        features = ", ".join(f"i.{ident(f)}" for f in self._features)
        own = f"""
            SELECT i.partition_key, i.record_id, {features}, CAST(NULL AS INTEGER) AS attempt_seen
            FROM inputs AS i WHERE i.partition_key = $partition_key
        """
        if only_unpredicted:
            own += """
                AND NOT EXISTS (SELECT 1 FROM predictions AS p
                                WHERE p.partition_key = i.partition_key AND p.record_id = i.record_id)
            """
        carried = f"""
            UNION ALL
            SELECT i.partition_key, i.record_id, {features}, e.attempt AS attempt_seen
            FROM inputs AS i JOIN prediction_errors AS e
              ON e.partition_key = i.partition_key AND e.record_id = i.record_id
            WHERE i.partition_key < $partition_key AND NOT e.dead
        """
        return self._session.arrow_reader(own + (carried if carry else ""), {"partition_key": self.partition_key})


class Ledger(Snapshots):
    @contextmanager
    def partition_work(self, partition_key: str) -> Iterator[PartitionWork]:
        """A session on the partition's work: its input snapshot id, and its records if the run needs them.

        One session for both, so that a run which resumes staged work opens the warehouse
        once before it predicts, and one that does not reads the records it checked.
        """
        with self.session() as session:
            yield PartitionWork(session, self.contract.features, partition_key)

    def input_snapshot(self, partition_key: str) -> str:
        """An id of the partition's current input snapshot: the run that took it, and when."""
        with self.partition_work(partition_key) as work:
            return work.snapshot

    def publish_outcome(self, run: PredictionRun, staged: StagedOutcome) -> PublishResult:
        """Record a run's staged predictions and errors in the ledger, in one transaction.

        Every worked record gets its new outcome in place of its previous one, so a record
        is never in `predictions` twice nor in both tables. The partition's own records are
        replaced as a whole (by partition key, no join over its rows); carried records one
        by one, and only if their error row is unchanged since the work was read (another
        run may have settled them meanwhile). A failed record's attempt counts up; at
        `max_attempts` it is marked dead and no longer carried.

        The partition's lock keeps out other publishes and snapshots of it; a carry-over run
        settles other partitions' records, so it takes the warehouse's exclusive lock, other
        runs its shared lock (a snapshot that moves records between partitions waits for them).
        """
        key = {"p": run.partition_key}
        with self.session() as session:
            if staged.work is not None:
                # The publish needs only which records were worked, and the attempt each carried one had.
                session.stage_arrow("work_file", staged.work)
            if run.mode == OnFailure.CARRY_OVER:  # its rows are filtered on the way in (_insert_predictions)
                for index, part in enumerate(staged.predictions):
                    session.stage_arrow(f"predicted_{index}", part.rows)
            # A run whose every record was predicted staged no error file: nothing to insert.
            failures = not (isinstance(staged.errors, ds.FileSystemDataset) and not staged.errors.files)
            if failures:
                session.stage_arrow("errors_file", staged.errors)
            add_probability_columns(session, run.probability_columns)
            with session.transaction():
                session.lock_all(shared=run.mode != OnFailure.CARRY_OVER)
                session.lock_partition(run.partition_key)
                return self._publish(session, run, staged, key, failures)

    def _publish(
        self, session: Session, run: PredictionRun, staged: StagedOutcome, key: dict[str, Any], failures: bool
    ) -> PublishResult:
        carry = run.mode == OnFailure.CARRY_OVER
        # Earlier attempts of the records this run worked: the partition's own failed
        # records, and the carried ones still failed as the work saw them.
        session.temp_table(
            "prior",
            "SELECT partition_key, record_id, attempt FROM prediction_errors WHERE partition_key = $p"
            + (
                """
                UNION ALL
                SELECT e.partition_key, e.record_id, e.attempt
                FROM work_file AS w JOIN prediction_errors AS e
                  ON e.partition_key = w.partition_key AND e.record_id = w.record_id
                WHERE w.partition_key <> $p AND e.attempt = w.attempt_seen AND NOT e.dead
                """
                if carry
                else ""
            ),
            key,
        )
        if run.mode == OnFailure.RETRY_FAILED:
            # Only the records without a prediction were worked; a prediction that
            # another run wrote for one of them meanwhile gives way to this run's.
            worked = (
                "t.partition_key = $p AND t.record_id IN (SELECT record_id FROM work_file WHERE partition_key = $p)"
            )
            self._archive(session, run, worked, key)
            session.execute(f"DELETE FROM predictions AS t WHERE {worked}", key)
        else:
            self._archive(session, run, "t.partition_key = $p", key)
            session.execute("DELETE FROM predictions WHERE partition_key = $p", key)
        session.execute("DELETE FROM prediction_errors WHERE partition_key = $p", key)
        if carry:
            for table in ("predictions", "prediction_errors"):
                session.execute(
                    f"""
                    DELETE FROM {table} AS t USING prior AS c
                    WHERE c.partition_key <> $p AND t.partition_key = c.partition_key AND t.record_id = c.record_id
                    """,
                    key,
                )
        carried_ok = "SELECT partition_key, record_id FROM prior WHERE partition_key <> $p"
        run_predicted = sum(
            self._insert_predictions(session, run, f"predicted_{index}", part, carry)
            for index, part in enumerate(staged.predictions)
        )
        self._unarchive_current(session, run, carry)
        run_failed = 0
        if failures:
            run_failed = session.write(
                f"""
                INSERT INTO prediction_errors
                    (partition_key, record_id, error, attempt, dead, attempted_in_partition, run_id, failed_at)
                SELECT f.partition_key, f.record_id, f.error, coalesce(c.attempt, 0) + 1,
                       coalesce(c.attempt, 0) + 1 >= $max_attempts, f.attempted_in_partition, f.run_id, f.failed_at
                FROM errors_file AS f LEFT JOIN prior AS c
                  ON c.partition_key = f.partition_key AND c.record_id = f.record_id
                WHERE f.partition_key = $p
                   OR EXISTS (SELECT 1 FROM ({carried_ok}) AS k
                              WHERE k.partition_key = f.partition_key AND k.record_id = f.record_id)
                """,
                {**key, "max_attempts": run.max_attempts},
            )
        completeness, tally = self._outcomes(session, run.partition_key)
        if not completeness.passed:
            # Outcomes of records that left the partition's inputs after the work was read: the partition was
            # re-snapshotted, or another partition's snapshot took a record id with an earlier copy. Such a
            # record is no longer this partition's (the partition that took it predicts it).
            for table in ("predictions", "prediction_errors"):
                session.execute(
                    f"""
                    DELETE FROM {table} AS t WHERE t.partition_key = $p AND NOT EXISTS (
                        SELECT 1 FROM inputs AS i WHERE i.partition_key = t.partition_key AND i.record_id = t.record_id)
                    """,
                    key,
                )
            completeness, tally = self._outcomes(session, run.partition_key)
        # Only a carry-over's `prior` holds other partitions' records.
        [(carried_in,)] = session.fetchall(f"SELECT count(*) FROM ({carried_ok}) AS k", key) if carry else [(0,)]
        result = PublishResult(
            completeness=completeness,
            succeeded=tally.predicted,
            failed=tally.failed,
            dead=tally.dead,
            carried_in=int(carried_in),
            run_predicted=int(run_predicted),
            run_failed=int(run_failed),
        )
        rate = result.run_predicted / run.wall_seconds if run.wall_seconds > 0 else None
        session.execute("DELETE FROM prediction_stats WHERE partition_key = $p", key)
        session.execute(
            """
            INSERT INTO prediction_stats
                (partition_key, mode, valid_inputs, succeeded, failed, dead, rejected, carried_in, run_predicted,
                 run_failed, model_name, model_version, run_id, completed_at, wall_seconds, rows_per_second,
                 every_input_predicted)
            SELECT $p, $mode, $valid_inputs, $succeeded, $failed, $dead,
                   (SELECT coalesce(max(rejected_rows), 0) FROM input_stats WHERE partition_key = $p),
                   $carried_in, $run_predicted, $run_failed, $model_name, $model_version, $run_id, now(),
                   $wall_seconds, $rate, $passed
            """,
            {
                **key,
                "mode": run.mode,
                "valid_inputs": completeness.valid_inputs,
                "succeeded": result.succeeded,
                "failed": result.failed,
                "dead": result.dead,
                "carried_in": result.carried_in,
                "run_predicted": result.run_predicted,
                "run_failed": result.run_failed,
                "model_name": run.model_name,
                "model_version": run.model_version,
                "run_id": run.run_id,
                "wall_seconds": run.wall_seconds,
                "rate": rate,
                "passed": completeness.passed,
            },
        )
        if run.mode == OnFailure.RETRY_ALL:
            # The partition's predictions are now this run's alone, all made by its model version.
            versions = run.model_version if result.succeeded else ""
            session.execute(
                "UPDATE prediction_stats SET model_versions = $v WHERE partition_key = $p", {**key, "v": versions}
            )
        else:
            record_model_versions(session, "s.partition_key = $p", key)
        if carry:  # the carried records' own partitions gained or lost predictions too
            record_model_versions(
                session, "s.partition_key IN (SELECT partition_key FROM prior WHERE partition_key <> $p)", key
            )
        return result

    @staticmethod
    def _insert_predictions(
        session: Session, run: PredictionRun, relation: str, staged: StagedPredictions, carry: bool
    ) -> int:
        """Insert one attempt's staged predictions, with the columns that are the same for all of them
        written here. Carried ones (staged as the relation `relation`) only if publishing may still settle
        them; otherwise every row goes in, streamed straight into the table."""
        constants = {
            "model_name": run.model_name,
            "model_version": run.model_version,
            "run_id": staged.run_id,
            "predicted_at": staged.predicted_at,
            "predicted_in_partition": run.partition_key,
        }
        if not carry:
            return session.insert_arrow("predictions", staged.rows, constants)
        values = staged.rows.schema.names
        names = ", ".join(ident(name) for name in [*values, *constants])
        selected = ", ".join([*(f"f.{ident(name)}" for name in values), *(f"${name}" for name in constants)])
        return session.write(
            f"""
            INSERT INTO predictions ({names})
            SELECT {selected}
            FROM {relation} AS f
            WHERE f.partition_key = $p OR EXISTS (
                SELECT 1 FROM prior AS c WHERE c.partition_key <> $p
                AND c.partition_key = f.partition_key AND c.record_id = f.record_id)
            """,
            {"p": run.partition_key, **constants},
        )

    def _archive(self, session: Session, run: PredictionRun, scope: str, params: dict[str, Any]) -> None:
        """Copy the predictions about to be replaced (`scope`, over `predictions AS t`) that another model
        version made into `predictions_history`.

        History keeps, per partition, record and version, that version's latest superseded
        prediction: archiving it again replaces the earlier copy. `_unarchive_current` then
        drops the copies that a run made current again (a rollback to an earlier version).
        """
        self._archive_rows(
            session,
            f"({scope}) AND t.model_version IS DISTINCT FROM $version",
            {**params, "version": run.model_version},
            run.run_id,
        )

    @staticmethod
    def _unarchive_current(session: Session, run: PredictionRun, carry: bool) -> None:
        """Drop history copies of predictions this run made current again (same record, same version).

        History never keeps a copy of a record's current prediction, so these are the copies, in
        this run's version, of the partition's (and the carried) records predicted in it now.
        """
        params = {"p": run.partition_key, "version": run.model_version}
        session.execute(
            """
            DELETE FROM predictions_history AS h USING predictions AS p
            WHERE h.partition_key = $p AND h.model_version = $version
              AND p.partition_key = $p AND p.model_version = $version AND p.record_id = h.record_id
            """,
            params,
        )
        if carry:
            session.execute(
                """
                DELETE FROM predictions_history AS h USING prior AS c
                WHERE c.partition_key <> $p AND h.partition_key = c.partition_key AND h.record_id = c.record_id
                  AND h.model_version = $version
                  AND EXISTS (SELECT 1 FROM predictions AS p WHERE p.partition_key = h.partition_key
                              AND p.record_id = h.record_id AND p.model_version = $version)
                """,
                params,
            )

    def model_versions(self) -> dict[str, list[str]]:
        """Per partition with predictions (or a prediction run), the model versions that made them.

        A partition whose every record failed has no prediction rows; its last run's
        version stands for it.
        """
        if not self.exists():
            return {}
        with self.session(read_only=True) as session:
            # `model_versions` is kept by every statement of this release that changes a partition's
            # predictions, and filled in when the column is added to a warehouse of an earlier release (by
            # the first run that writes). Until then, and in a row it left NULL, the partition's predictions
            # are read. A run of the earlier release still going after that can leave other partitions'
            # values behind (docs/concepts.md says what to do).
            kept = "model_versions" if "model_versions" in session.columns("prediction_stats") else "NULL"
            rows = session.fetchall(
                f"SELECT partition_key, model_version, {kept} FROM prediction_stats ORDER BY partition_key"
            )
            unknown = [str(key) for key, _, versions in rows if versions is None]
            found = dict(
                session.fetchall(
                    f"""
                    SELECT p.partition_key, {model_versions_of("p")}
                    FROM predictions AS p WHERE {in_list("p.partition_key", "keys")} GROUP BY p.partition_key
                    """,
                    {"keys": unknown},
                )
                if unknown
                else []
            )
        return {
            str(key): ((found.get(str(key), "") if versions is None else versions) or str(last)).split(",")
            for key, last, versions in rows
        }

    def _outcomes(self, session: Session, partition_key: str) -> tuple[Completeness, _Tally]:
        """Compare the partition's inputs with its outcomes (predictions plus recorded errors); and how
        many predictions, errors and dead records it has.

        The common case is decided by streaming aggregates, one per table, in constant memory:
        the two multisets of record ids are equal when their counts and their sums of 64-bit
        hashes are (added in SQL, exactly). Only when they differ are the joins run that say
        what is missing or doubled.
        """
        params = {"p": partition_key}
        hashed = session.hash("record_id")
        [(inputs, input_hashes, outcomes, outcome_hashes, predicted, failed, dead)] = session.fetchall(
            f"""
            SELECT i.n, i.hashes, p.n + e.n, p.hashes + e.hashes, p.n, e.n, e.dead
            FROM (SELECT count(*) AS n, coalesce(sum({hashed}), 0) AS hashes FROM inputs WHERE partition_key = $p) AS i,
                 (SELECT count(*) AS n, coalesce(sum({hashed}), 0) AS hashes
                  FROM predictions WHERE partition_key = $p) AS p,
                 (SELECT count(*) AS n, coalesce(sum({hashed}), 0) AS hashes, count(*) FILTER (WHERE dead) AS dead
                  FROM prediction_errors WHERE partition_key = $p) AS e
            """,
            params,
        )
        tally = _Tally(int(predicted), int(failed), int(dead))
        if inputs == outcomes and input_hashes == outcome_hashes:
            return Completeness(int(inputs), int(outcomes), 0, 0, 0), tally
        row = session.fetchone(
            """
            WITH i AS (SELECT record_id FROM inputs WHERE partition_key = $p),
                 o AS (SELECT record_id, count(*) AS n FROM (
                           SELECT record_id FROM predictions WHERE partition_key = $p
                           UNION ALL
                           SELECT record_id FROM prediction_errors WHERE partition_key = $p) AS u
                       GROUP BY record_id)
            SELECT (SELECT count(*) FROM i),
                   (SELECT coalesce(sum(n), 0) FROM o),
                   (SELECT count(*) FROM i WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.record_id = i.record_id)),
                   (SELECT coalesce(sum(n - 1), 0) FROM o),
                   (SELECT count(*) FROM o WHERE NOT EXISTS (SELECT 1 FROM i WHERE i.record_id = o.record_id))
            """,
            params,
        )
        assert row is not None
        return Completeness(*(int(value) for value in row)), tally

    def completeness(self, partition_key: str) -> Completeness:
        with self.session(read_only=True) as session:
            return self._outcomes(session, partition_key)[0]
