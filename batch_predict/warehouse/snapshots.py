"""Input snapshots: a partition's records from the landing files, replaced atomically with their outcomes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batch_predict import contract as rules
from batch_predict.warehouse.connection import Session, adopt
from batch_predict.warehouse.core import WarehouseCore
from batch_predict.warehouse.landing import DUPLICATE_DETAIL, Source
from batch_predict.warehouse.schema import alter_probability_columns, record_model_versions
from batch_predict.warehouse.sql import ident, in_list, literal
from batch_predict.warehouse.types import InputStats, PartitionCheckError

# A rejected duplicate `r` sorts before the copy `k` that keeps its record id (then it should keep the id).
_SORTS_BEFORE = "r.event_time < k.event_time OR (r.event_time = k.event_time AND r.source_file < k.source_file)"


def _range_copies() -> str:
    """The copies the range's partitions (`$keys`) keep: each kept record id with its event time and file."""
    return f"(SELECT record_id, event_time, source_file FROM inputs WHERE {in_list('partition_key', 'keys')})"


_WINDOWS_SCHEMA = pa.schema(
    [
        ("partition_key", pa.string()),
        ("window_start", pa.timestamp("us", "UTC")),
        ("window_end", pa.timestamp("us", "UTC")),
    ]
)

# Rows per Arrow batch on their way from the landing engine to the warehouse.
_BATCH_ROWS = 100_000

# A partition to snapshot: its key and the [start, end) of its window.
Window = tuple[str, datetime, datetime]


class Snapshots(WarehouseCore):
    def snapshot_inputs(
        self,
        source: Source,
        partition_key: str,
        window_start: datetime,
        window_end: datetime,
        run_id: str,
        max_rejected_share: float = 1.0,
        placeable: tuple[datetime, datetime] | None = None,
        max_shrink_share: float = 0.0,
        allow_shrink: bool = False,
    ) -> InputStats:
        """Replace the partition's inputs, rejections and stats with the source rows in its window.

        Every row in the window ends in exactly one of `inputs` or `rejected_inputs`.
        Nothing is written, and `SourceError` says why, when more than `max_rejected_share` of the rows
        break the contract (a source that is mostly invalid is usually a wrong file or
        setting, not bad records), or when the window holds fewer than `max_shrink_share` of
        the records the partition was last snapshotted with (landing files that were moved
        away) unless `allow_shrink`.

        The same transaction moves the predictions of records that left the partition to
        `predictions_history`, takes a record id from another partition that stores a later
        copy of it (that copy is rejected there as a duplicate), and refreshes
        `unplaced_inputs` for the files read: records whose event time is missing, does not
        parse, or falls outside `placeable` (the partitions that exist now).

        It reads other partitions' records and settles them, so it holds the warehouse's
        exclusive lock from the first read of stored copies to the commit.
        """
        windows = [(partition_key, window_start, window_end)]
        stats = self.snapshot_range(
            source, windows, run_id, max_rejected_share, placeable, max_shrink_share, allow_shrink
        )
        return stats[partition_key]

    def snapshot_range(
        self,
        source: Source,
        windows: Sequence[Window],
        run_id: str,
        max_rejected_share: float = 1.0,
        placeable: tuple[datetime, datetime] | None = None,
        max_shrink_share: float = 0.0,
        allow_shrink: bool = False,
    ) -> dict[str, InputStats]:
        """`snapshot_inputs` for consecutive partitions at once (`windows` in time order, each starting where
        the one before ends), in one transaction: a handful of statements for the whole range instead of
        the same statements for every partition. Each partition keeps its own rows, rejections and stats.

        The outcome is the one snapshotting the partitions one by one in time order gives: which copy of
        a record id wins does not depend on the order (`Landing.classify`), and the copies stored in
        the range's own partitions are replaced by the range's landing rows either way. If any partition
        fails its checks, `PartitionCheckError` names the first and nothing is written.
        """
        if not windows:
            return {}
        for (before, _, end), (after, start, _) in pairwise(windows):
            if end != start:
                raise ValueError(f"Partition {after} does not start where {before} ends: not one range.")
        features = ", ".join(ident(f) for f in self.contract.features)
        landing = self.landing
        # The landing files are read by an engine of their own, before the warehouse is opened.
        engine = self.landing_engine()
        try:
            files = landing.check_source(engine, source)
            landing.stage(
                engine,
                source,
                {
                    "pattern": source.pattern,
                    "window_start": windows[0][1],
                    "window_end": windows[-1][2],
                    "placeable_start": placeable[0] if placeable else None,
                    "placeable_end": placeable[1] if placeable else None,
                },
                files,
            )
            return self._snapshot(
                engine,
                source,
                windows,
                run_id,
                files,
                features,
                max_rejected_share,
                max_shrink_share,
                allow_shrink,
            )
        finally:
            if not self.backend.holding:
                self.close_landing_engine()

    def _snapshot(
        self,
        engine: Any,
        source: Source,
        windows: Sequence[Window],
        run_id: str,
        files: list[str],
        features: str,
        max_rejected_share: float,
        max_shrink_share: float,
        allow_shrink: bool,
    ) -> dict[str, InputStats]:
        """The warehouse side of `snapshot_range`, once the landing rows are staged on `engine`."""
        landing = self.landing
        keys = [key for key, _, _ in windows]
        # The landed rows in every window snapshotted before, counted while no session holds the warehouse (a
        # pass over the staged landing; a held connection is let go meanwhile after its idle time), and
        # compared under the lock with what each snapshot took (`_late_partitions`).
        with self.session() as session:
            snapshotted_windows = session.arrow("SELECT partition_key, window_start, window_end FROM input_stats")
        digests = self._window_digests(engine, windows, snapshotted_windows)
        with self.session() as session:
            # The range's rows stream from the engine to the warehouse: a range of big partitions need not fit
            # in memory.
            session.adopt("window_ids", engine.sql("SELECT * FROM window_ids").to_arrow_reader(_BATCH_ROWS))
            # All or nothing from here on.
            with session.transaction():
                # The exclusive lock keeps out every other writer (each takes `lock_all` first), so the
                # partitions need no locks of their own (in PostgreSQL, one per partition would be many).
                session.lock_all()
                copies = session.arrow(
                    f"""
                    SELECT partition_key, record_id, event_time, source_file FROM inputs
                    WHERE NOT {in_list("partition_key", "keys")} AND record_id IN (SELECT record_id FROM window_ids)
                    """,
                    {"keys": keys},
                )
                adopt(engine, "stored_copies", copies)
                landing.classify(engine)
                adopt(
                    engine,
                    "range_windows",
                    pa.table(
                        {
                            "partition_key": keys,
                            "window_start": [start for _, start, _ in windows],
                        },
                        schema=pa.schema([("partition_key", pa.string()), ("window_start", pa.timestamp("us", "UTC"))]),
                    ),
                )
                # Each row of the range's window goes to the partition whose window holds its event time.
                session.adopt(
                    "staged_source",
                    engine.sql(
                        """
                        SELECT s.*, CASE WHEN s.in_window THEN w.partition_key END AS partition_key
                        FROM staged_source AS s ASOF LEFT JOIN range_windows AS w ON s.event_time >= w.window_start
                        """
                    ).to_arrow_reader(_BATCH_ROWS),
                )
                counts = {
                    str(key): (int(n), int(valid))
                    for key, n, valid in session.fetchall(
                        """
                        SELECT partition_key, count(*), count(*) FILTER (WHERE reason IS NULL)
                        FROM staged_source WHERE in_window GROUP BY partition_key
                        """
                    )
                }
                by_reason: dict[str, dict[str, int]] = {key: {} for key in keys}
                for key, reason, n in session.fetchall(
                    """
                    SELECT partition_key, reason, count(*) FROM staged_source
                    WHERE in_window AND reason IS NOT NULL GROUP BY partition_key, reason ORDER BY partition_key, reason
                    """
                ):
                    by_reason[str(key)][str(reason)] = int(n)
                snapshotted = {
                    str(key): (int(rows or 0), digest)
                    for key, rows, digest in session.fetchall(
                        "SELECT partition_key, source_rows, landing_digest FROM input_stats"
                    )
                }
                stored = {key: snapshotted[key][0] for key in keys if key in snapshotted}
                late = self._late_partitions(session, engine, keys, snapshotted, digests)
                for key in keys:
                    self._check_counts(
                        source,
                        key,
                        counts.get(key, (0, 0)),
                        by_reason[key],
                        int(stored.get(key) or 0),
                        max_rejected_share,
                        max_shrink_share,
                        allow_shrink,
                    )
                # The record ids the range keeps that other partitions reject as duplicates of its copies: if the
                # range no longer keeps one, or keeps it with a later copy, those partitions must run again.
                session.temp_table(
                    "kept_with_duplicates",
                    f"""
                    SELECT DISTINCT i.record_id FROM inputs AS i JOIN rejected_inputs AS r ON r.record_id = i.record_id
                    WHERE {in_list("i.partition_key", "keys")} AND NOT {in_list("r.partition_key", "keys")}
                      AND r.reason = {literal(rules.DUPLICATE_RECORD_ID)}
                    """,
                    {"keys": keys},
                )
                for table in ("inputs", "rejected_inputs", "input_stats"):
                    session.execute(f"DELETE FROM {table} WHERE {in_list('partition_key', 'keys')}", {"keys": keys})
                session.execute(
                    f"""
                    INSERT INTO inputs (partition_key, record_id, event_time, {features}, source_file, run_id, loaded_at)
                    SELECT partition_key, record_id, event_time, {features}, source_file, $run_id, now()
                    FROM staged_source WHERE in_window AND reason IS NULL
                    """,
                    {"run_id": run_id},
                )
                session.execute(
                    """
                    INSERT INTO rejected_inputs
                        (partition_key, record_id, event_time, reason, detail, raw_values, source_file, run_id, rejected_at)
                    SELECT partition_key, record_id, event_time, reason, detail, raw_values, source_file, $run_id, now()
                    FROM staged_source WHERE in_window AND reason IS NOT NULL
                    """,
                    {"run_id": run_id},
                )
                holders = sorted(set(copies.column("partition_key").to_pylist()))
                demoted = self._demote_later_copies(session, keys, holders, run_id)
                self._name_new_keepers(session, keys)
                keeper_lost = self._keeper_lost(session, keys)
                taken_from = {key for by_key in demoted.values() for key in by_key}
                archived = self._archive_orphans(session, [*keys, *sorted(taken_from)], run_id, bool(demoted))
                session.adopt(
                    "range_stats",
                    pa.table(
                        {
                            "partition_key": keys,
                            "window_start": [start for _, start, _ in windows],
                            "window_end": [end for _, _, end in windows],
                            "source_rows": [counts.get(key, (0, 0))[0] for key in keys],
                            "valid_rows": [counts.get(key, (0, 0))[1] for key in keys],
                            "rejected_by_reason": [json.dumps(by_reason[key], sort_keys=True) for key in keys],
                            "landing_digest": [digests.get(key, (0, ""))[1] for key in keys],
                        },
                        schema=pa.schema(
                            [
                                ("partition_key", pa.string()),
                                ("window_start", pa.timestamp("us", "UTC")),
                                ("window_end", pa.timestamp("us", "UTC")),
                                ("source_rows", pa.int64()),
                                ("valid_rows", pa.int64()),
                                ("rejected_by_reason", pa.string()),
                                ("landing_digest", pa.string()),
                            ]
                        ),
                    ),
                )
                session.execute(
                    """
                    INSERT INTO input_stats
                        (partition_key, window_start, window_end, source_rows, valid_rows, rejected_rows,
                         rejected_by_reason, run_id, loaded_at, landing_digest)
                    SELECT partition_key, window_start, window_end, source_rows, valid_rows, source_rows - valid_rows,
                           rejected_by_reason, $run_id, now(), landing_digest
                    FROM range_stats
                    """,
                    {"run_id": run_id},
                )
                self._refresh_unplaced(session, files, run_id)
                unplaced = self._unplaced_counts(session)
                late = self._refresh_late(session, keys, late, keeper_lost, snapshotted, digests, run_id)
        results: dict[str, InputStats] = {}
        for key in keys:
            source_rows, valid_rows = counts.get(key, (0, 0))
            results[key] = InputStats(
                key,
                source_rows,
                valid_rows,
                source_rows - valid_rows,
                by_reason[key],
                unplaced_by_reason=dict(unplaced),
                demoted=demoted.get(key, {}),
                archived_predictions=archived.get(key, 0),
                late=dict(late),
            )
        return results

    @staticmethod
    def _refresh_late(
        session: Session,
        keys: Sequence[str],
        late: dict[str, int],
        keeper_lost: dict[str, int],
        snapshotted: dict[str, tuple[int, str | None]],
        digests: dict[str, tuple[int, str]],
        run_id: str,
    ) -> dict[str, int]:
        """Record in `late_partitions` what this snapshot found: the late files it saw replace those the last
        snapshot saw; a partition's `keeper_lost` rows stay until it runs again (only the snapshot that
        changed the keeper can see them). Returns, per partition in the table now, its records to place."""
        # What this snapshot finds again: every late file, the range's own rows, and the partitions it finds a
        # keeper lost for.
        session.execute(
            f"""
            DELETE FROM late_partitions WHERE reason = 'late_file' OR {in_list("partition_key", "keys")}
                OR (reason = 'keeper_lost' AND {in_list("partition_key", "lost")})
            """,
            {"keys": list(keys), "lost": sorted(keeper_lost)},
        )
        found = [("late_file", key, n) for key, n in sorted(late.items())]
        found += [("keeper_lost", key, n) for key, n in sorted(keeper_lost.items())]
        if found:
            session.adopt(
                "late_found",
                pa.table(
                    {
                        "reason": [reason for reason, _, _ in found],
                        "partition_key": [key for _, key, _ in found],
                        "snapshot_rows": [snapshotted.get(key, (0, None))[0] for _, key, _ in found],
                        "landed_rows": [digests.get(key, (0, ""))[0] for _, key, _ in found],
                        "missing_rows": [n for _, _, n in found],
                    },
                    schema=pa.schema(
                        [
                            ("reason", pa.string()),
                            ("partition_key", pa.string()),
                            ("snapshot_rows", pa.int64()),
                            ("landed_rows", pa.int64()),
                            ("missing_rows", pa.int64()),
                        ]
                    ),
                ),
            )
            session.execute(
                """
                INSERT INTO late_partitions
                    (partition_key, reason, snapshot_rows, landed_rows, missing_rows, checked_at, checked_by_run)
                SELECT partition_key, reason, snapshot_rows, landed_rows, missing_rows, now(), $run_id FROM late_found
                """,
                {"run_id": run_id},
            )
        return {
            str(key): int(n)
            for key, n in session.fetchall(
                "SELECT partition_key, sum(missing_rows) FROM late_partitions GROUP BY partition_key"
            )
        }

    def late_partitions(self) -> dict[str, dict[str, Any]]:
        """The partitions that lack records they should hold now (a late file, a copy that lost its record id),
        as the snapshots found them: per partition, `missing_rows` and the `reasons`."""
        with self.session(read_only=True) as session:
            if not session.has_table("late_partitions"):
                return {}
            rows = session.fetchall(
                "SELECT partition_key, reason, missing_rows FROM late_partitions ORDER BY partition_key, reason"
            )
        found: dict[str, dict[str, Any]] = {}
        for key, reason, n in rows:
            entry = found.setdefault(str(key), {"missing_rows": 0, "reasons": []})
            entry["missing_rows"] += int(n or 0)
            entry["reasons"].append(str(reason))
        return found

    def _window_digests(
        self, engine: Any, windows: Sequence[tuple[str, datetime, datetime]], snapshotted: pa.Table
    ) -> dict[str, tuple[int, str]]:
        """The landed rows of the range's windows and of every partition snapshotted before (`snapshotted`:
        partition_key, window_start, window_end of input_stats): per window, how many and their digest
        (`Landing.window_digests`)."""
        keys = {key for key, _, _ in windows}
        others = snapshotted.filter(pc.invert(pc.is_in(snapshotted["partition_key"], pa.array(sorted(keys)))))
        table = pa.concat_tables(
            [
                others.select(["partition_key", "window_start", "window_end"]).cast(_WINDOWS_SCHEMA),
                pa.table(
                    {
                        "partition_key": [key for key, _, _ in windows],
                        "window_start": [start for _, start, _ in windows],
                        "window_end": [end for _, _, end in windows],
                    },
                    schema=_WINDOWS_SCHEMA,
                ),
            ]
        )
        adopt(engine, "digest_windows", table)
        return self.landing.window_digests(engine, "digest_windows")

    def _late_partitions(
        self,
        session: Session,
        engine: Any,
        keys: Sequence[str],
        snapshotted: dict[str, tuple[int, str | None]],
        digests: dict[str, tuple[int, str]],
    ) -> dict[str, int]:
        """The partitions outside the range whose snapshot lacks landed records of their window, with how many:
        the landed rows whose record id and event time none of the partition's stored rows (inputs and
        rejected_inputs) has. `snapshotted`: source_rows and landing_digest of every input_stats row.

        A window whose rows are those its snapshot took (same count and digest) is not looked at further:
        the digest leaves out the file, so a file moved or renamed, or the landing folder mounted elsewhere,
        changes nothing. One with fewer rows may only have lost files to a retention job, which is not late.
        A partition snapshotted before its digest was kept is judged by its count only: late if its window
        holds more landed rows than it took.
        """
        in_range = set(keys)
        candidates = []
        for key, (source_rows, digest) in snapshotted.items():
            landed, now = digests.get(key, (0, ""))
            if key in in_range or landed == 0:
                continue
            if digest is None and landed <= source_rows:
                continue
            if landed == source_rows and digest == now:
                continue
            candidates.append(key)
        if not candidates:
            return {}
        adopt(
            engine,
            "late_stored",
            session.arrow(
                f"""
                SELECT partition_key, record_id, event_time FROM inputs WHERE {in_list("partition_key", "keys")}
                UNION ALL
                SELECT partition_key, record_id, event_time FROM rejected_inputs
                WHERE {in_list("partition_key", "keys")}
                """,
                {"keys": sorted(candidates)},
            ),
        )
        late = self.landing.rows_not_stored(engine, "digest_windows", sorted(candidates), "late_stored")
        for key in candidates:
            # More rows than the snapshot took, each with a record id and event time it stores: copies with
            # other values (a file landed that repeats records with corrections).
            landed, source_rows = digests.get(key, (0, ""))[0], snapshotted[key][0]
            if key not in late and landed > source_rows:
                late[key] = landed - source_rows
        return late

    @staticmethod
    def _check_counts(
        source: Source,
        partition_key: str,
        counts: tuple[int, int],
        by_reason: dict[str, int],
        stored_rows: int,
        max_rejected_share: float,
        max_shrink_share: float,
        allow_shrink: bool,
    ) -> None:
        """Raise `PartitionCheckError` if the partition's window shrank too much or holds too many invalid records."""
        source_rows, valid_rows = counts
        if not allow_shrink and stored_rows and (source_rows == 0 or source_rows < max_shrink_share * stored_rows):
            below = f", fewer than BATCH_PREDICT_MAX_SHRINK_SHARE={max_shrink_share:g} of them"
            raise PartitionCheckError(
                f"Partition {partition_key} was snapshotted with {stored_rows} source records, but "
                f"{source.pattern} now holds {source_rows} in its window{below if source_rows else ''}: "
                "were landing files moved or deleted? Nothing was written. Put the files back, or, to "
                "replace the partition with what is there now (its removed predictions go to "
                'predictions_history), run it with the run config {"ops": {"inputs": {"config": '
                '{"allow_shrink": true}}}} or `batch-predict materialize --allow-shrink`.'
            )
        if source_rows and (source_rows - valid_rows) / source_rows > max_rejected_share:
            raise PartitionCheckError(
                f"{source_rows - valid_rows} of the {source_rows} source records of partition "
                f"{partition_key} break the feature contract ({json.dumps(by_reason, sort_keys=True)}), "
                f"more than BATCH_PREDICT_MAX_REJECTED_SHARE={max_rejected_share:g}. Nothing was written. "
                "Check the files and the BATCH_PREDICT_*_COLUMN / FEATURES settings, or raise the share "
                "to accept these rejections."
            )

    @staticmethod
    def _name_new_keepers(session: Session, keys: Sequence[str]) -> None:
        """Copies rejected earlier in other partitions as duplicates of a record id the range's partitions keep
        now name the copy that keeps it now (the copy they named may have lost the id since)."""
        detail = f"{literal(DUPLICATE_DETAIL)} || CAST(k.event_time AS VARCHAR) || ' in ' || k.source_file"
        session.execute(
            f"""
            UPDATE rejected_inputs AS r
            SET detail = {detail}
            FROM {_range_copies()} AS k
            WHERE r.record_id = k.record_id AND r.reason = {literal(rules.DUPLICATE_RECORD_ID)}
              AND NOT {in_list("r.partition_key", "keys")} AND NOT ({_SORTS_BEFORE}) AND r.detail IS DISTINCT FROM {detail}
            """,
            {"keys": list(keys)},
        )

    @staticmethod
    def _keeper_lost(session: Session, keys: Sequence[str]) -> dict[str, int]:
        """Per other partition, its rows rejected as duplicates of a record id the range kept before this snapshot
        and no longer keeps (`kept_with_duplicates`: those ids), or keeps now with a copy that sorts after
        them: such a row should keep the id, which its partition's next run does."""
        rows = session.fetchall(
            f"""
            SELECT r.partition_key, count(*) FROM rejected_inputs AS r
            LEFT JOIN {_range_copies()} AS k ON k.record_id = r.record_id
            WHERE r.reason = {literal(rules.DUPLICATE_RECORD_ID)} AND NOT {in_list("r.partition_key", "keys")}
              AND CASE WHEN k.record_id IS NULL
                       THEN r.record_id IN (SELECT record_id FROM kept_with_duplicates)
                       ELSE {_SORTS_BEFORE} END
            GROUP BY r.partition_key
            """,
            {"keys": list(keys)},
        )
        return {str(key): int(n) for key, n in rows}

    def _demote_later_copies(
        self, session: Session, partition_keys: Sequence[str], holders: Sequence[str], run_id: str
    ) -> dict[str, dict[str, int]]:
        """Reject, in their partitions, the stored copies of record ids the partitions' inputs now hold.
        `holders`: the other partitions that stored a copy of one of the windows' record ids when the
        transaction began (only they can hold such a copy: the transaction holds the exclusive lock).

        Such a copy sorts after the new one (else the new one would have been rejected): an earlier
        copy landed late. It goes to its partition's `rejected_inputs` as a duplicate, with the detail
        a rerun of that partition would give, and the partition's `input_stats` counts follow. Returns,
        per partition of `partition_keys` that took copies, the number taken from each other partition.
        """
        if not holders:
            return {}
        raw_values = self._raw_values_sql("o")
        session.temp_table(
            "demoted",
            f"""
            SELECT o.partition_key, o.record_id, o.event_time, o.source_file, {raw_values} AS raw_values,
                   {literal(DUPLICATE_DETAIL)} || CAST(n.event_time AS VARCHAR) || ' in ' || n.source_file AS detail,
                   n.partition_key AS taken_by
            FROM inputs AS o JOIN inputs AS n ON o.record_id = n.record_id
            WHERE {in_list("n.partition_key", "keys")} AND {in_list("o.partition_key", "holders")}
            """,
            {"keys": list(partition_keys), "holders": list(holders)},
        )
        taken: dict[str, dict[str, int]] = {}
        for by, key, n in session.fetchall(
            "SELECT taken_by, partition_key, count(*) FROM demoted GROUP BY taken_by, partition_key"
        ):
            taken.setdefault(str(by), {})[str(key)] = int(n)
        if not taken:
            return {}
        session.execute(
            f"""
            INSERT INTO rejected_inputs
                (partition_key, record_id, event_time, reason, detail, raw_values, source_file, run_id, rejected_at)
            SELECT partition_key, record_id, event_time, {literal(rules.DUPLICATE_RECORD_ID)}, detail,
                   raw_values, source_file, $run_id, now()
            FROM demoted
            """,
            {"run_id": run_id},
        )
        session.execute(
            """
            DELETE FROM inputs AS i USING demoted AS d
            WHERE i.partition_key = d.partition_key AND i.record_id = d.record_id
            """
        )
        for key in sorted({key for by_key in taken.values() for key in by_key}):
            reasons = dict(
                session.fetchall(
                    "SELECT reason, count(*) FROM rejected_inputs WHERE partition_key = $p GROUP BY reason "
                    "ORDER BY reason",
                    {"p": key},
                )
            )
            session.execute(
                """
                UPDATE input_stats SET
                    valid_rows = (SELECT count(*) FROM inputs WHERE partition_key = $p),
                    rejected_rows = (SELECT count(*) FROM rejected_inputs WHERE partition_key = $p),
                    rejected_by_reason = $by_reason
                WHERE partition_key = $p
                """,
                {"p": key, "by_reason": json.dumps(reasons, sort_keys=True)},
            )
        return taken

    def _raw_values_sql(self, alias: str) -> str:
        """SQL text of a stored record's feature values, as a rejection's `raw_values` shows them:
        `{'a': 1.0, 'b': 2.0}`."""
        if self.dialect == "duckdb":
            pairs = ", ".join(f"{ident(f)} := {alias}.{ident(f)}" for f in self.contract.features)
            return f"CAST(struct_pack({pairs}) AS VARCHAR)"
        parts = " || ', ' || ".join(
            f"{literal(repr(f) + ': ')} || coalesce(CAST({alias}.{ident(f)} AS VARCHAR), 'NULL')"
            for f in self.contract.features
        )
        return f"'{{' || {parts} || '}}'"

    def _archive_orphans(
        self, session: Session, partition_keys: Sequence[str], run_id: str, demoted: bool = False
    ) -> dict[str, int]:
        """Move the predictions of the partitions' records that are no longer in their inputs to
        `predictions_history` (still queryable in `predictions_all_versions`) and drop their error
        ledger rows. Returns the number of predictions moved per partition, a copy this transaction
        `demoted` (the temp table `_demote_later_copies` made) counted with the partition that took it."""
        scope = f"""{in_list("t.partition_key", "keys")} AND NOT EXISTS (
            SELECT 1 FROM inputs AS i WHERE i.partition_key = t.partition_key AND i.record_id = t.record_id)"""
        params: dict[str, Any] = {"keys": list(partition_keys)}
        archived: dict[str, int] = {}
        if self._archive_rows(session, scope, params, run_id):
            taker = (
                "(SELECT d.taken_by FROM demoted AS d "
                "WHERE d.partition_key = l.partition_key AND d.record_id = l.record_id)"
                if demoted
                else "NULL"
            )
            rows = session.fetchall(
                f"SELECT coalesce({taker}, l.partition_key) AS k, count(*) FROM leaving AS l GROUP BY k"
            )
            archived = {str(key): int(n) for key, n in rows}
            session.execute(f"DELETE FROM predictions AS t WHERE {scope}", params)
            record_model_versions(session, in_list("s.partition_key", "keys"), params)
        session.execute(f"DELETE FROM prediction_errors AS t WHERE {scope}", params)
        return archived

    def _archive_rows(self, session: Session, scope: str, params: dict[str, Any], run_id: str) -> int:
        """Copy the predictions in `scope` (over `predictions AS t`) into `predictions_history`, superseded
        by `run_id`, replacing an earlier copy of the same partition, record and version. Returns how many."""
        # A class of an earlier model, in a warehouse made before history existed. A snapshot holds the
        # exclusive lock; a publish added the columns before its own transaction (add_probability_columns).
        alter_probability_columns(session, [])
        columns = session.columns("predictions")
        session.temp_table("leaving", f"SELECT * FROM predictions AS t WHERE {scope}", params)
        row = session.fetchone("SELECT count(*) FROM leaving")
        leaving = int(row[0]) if row else 0
        if not leaving:  # the usual case in a first backfill: nothing to move
            return 0
        session.execute(
            """
            DELETE FROM predictions_history AS h USING leaving AS l
            WHERE h.partition_key = l.partition_key AND h.record_id = l.record_id AND h.model_version = l.model_version
            """
        )
        names = ", ".join(ident(name) for name in columns)
        session.execute(
            f"""
            INSERT INTO predictions_history ({names}, superseded_at, superseded_by_run)
            SELECT {names}, now(), $run_id FROM leaving
            """,
            {"run_id": run_id},
        )
        return leaving

    def _refresh_unplaced(self, session: Session, files: list[str], run_id: str) -> None:
        """Replace the `unplaced_inputs` rows of the files just read, keeping when each was first seen."""
        params: dict[str, Any] = {"files": files}
        session.temp_table(
            "unplaced_before",
            f"""
            SELECT source_file, record_id, raw_event_time, min(first_seen_at) AS first_seen_at
            FROM unplaced_inputs WHERE {in_list("source_file", "files")}
            GROUP BY source_file, record_id, raw_event_time
            """,
            params,
        )
        session.execute(f"DELETE FROM unplaced_inputs WHERE {in_list('source_file', 'files')}", params)
        session.execute(
            """
            INSERT INTO unplaced_inputs (record_id, source_file, reason, raw_event_time, first_seen_at, last_seen_run_id)
            SELECT s.record_id, s.source_file, s.unplaced, s.raw_event_time, coalesce(b.first_seen_at, now()), $run_id
            FROM staged_source AS s LEFT JOIN unplaced_before AS b
              -- Equality on values, not IS NOT DISTINCT FROM, so that PostgreSQL can hash-join (a NULL
              -- matches a literal '\x01' here: only when a record was first seen could be mistaken).
              ON s.source_file = b.source_file AND coalesce(s.record_id, '\x01') = coalesce(b.record_id, '\x01')
             AND coalesce(s.raw_event_time, '\x01') = coalesce(b.raw_event_time, '\x01')
            WHERE s.unplaced IS NOT NULL
            """,
            {"run_id": run_id},
        )

    @staticmethod
    def _unplaced_counts(session: Session) -> dict[str, int]:
        rows = session.fetchall("SELECT reason, count(*) FROM unplaced_inputs GROUP BY reason ORDER BY reason")
        return {str(reason): int(n) for reason, n in rows}

    def unplaced(self, limit: int) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Records that are in no partition: counts per reason, and up to `limit` rows, oldest first."""
        with self.session(read_only=True) as session:
            if not session.has_table("unplaced_inputs"):
                return {}, []
            counts = self._unplaced_counts(session)
            rows = session.records(
                """
                SELECT record_id, source_file, reason, raw_event_time, first_seen_at, last_seen_run_id
                FROM unplaced_inputs ORDER BY first_seen_at, source_file, record_id LIMIT $limit
                """,
                {"limit": limit},
            )
            return counts, rows
