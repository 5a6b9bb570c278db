"""`batch-predict`: the project's commands for what Dagster has no verb for."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch_predict.contract import FeatureContract
from batch_predict.interrupts import Stopped
from batch_predict.models.names import check_name
from batch_predict.models.registry import Registry
from batch_predict.models.types import ModelError
from batch_predict.redaction import redact
from batch_predict.settings import Settings, SettingsError, load_settings, split_names
from batch_predict.verdicts import PENDING, ModelAge, deadline_summary, deadline_verdict, rerun_hint
from batch_predict.warehouse import SourceError, Warehouse, WarehouseError, WarehouseUnavailable, shown_warehouse

if TYPE_CHECKING:
    import dagster as dg

    from batch_predict.models.source import ModelSource

# Runs started from the CLI log warnings and errors only; the UI has the rest.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

STATUS_COLUMNS = (
    ("partition_key", "partition"),
    ("source_rows", "source"),
    ("inputs", "inputs"),
    ("rejected", "rejected"),
    ("predictions", "predicted"),
    ("failed", "failed"),
    ("dead", "dead"),
    ("carried_in", "carried_in"),
    ("carried_out", "carried_out"),
    ("model_version", "model"),
    ("stale", "stale"),
    ("realized_accuracy", "accuracy"),
    ("drifted", "drift"),
    ("every_input_predicted", "complete"),
    ("deadline", "deadline"),
    ("run_id", "run"),
    ("updated_at", "updated"),
)


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line (and exit code 2), without the usage block."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


@contextmanager
def dotenv_applied(folder: Path) -> Iterator[None]:
    """The settings of `folder`'s `.env` over the environment for one command, as every `dagster` command
    started in that folder reads them (their values win over the environment's): `batch-predict` and
    `dagster` see the same warehouse."""
    path = folder / ".env"
    values: dict[str, str] = {}
    if path.exists():
        from dotenv import dotenv_values

        try:
            values = {key: value for key, value in dotenv_values(path).items() if value is not None}
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(
                f"Cannot read {path} ({error}). Every batch-predict and dagster command started in {folder} reads "
                "its settings: make it a readable UTF-8 file of NAME=value lines, or remove it."
            ) from None
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            try:
                os.environ[key] = value
            except ValueError as error:  # a NUL byte, or a name no environment takes ("A=B")
                raise SettingsError(
                    f"Cannot use {path}: its line for {key!r} cannot be set ({error}). Every batch-predict and dagster "
                    f"command started in {folder} reads its settings: make each line NAME=value, with a plain "
                    "variable name and no NUL byte."
                ) from None
        yield
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse the settings name, as the assets open it."""
    return Warehouse(
        settings.warehouse,
        FeatureContract.from_settings(settings),
        settings.lock_timeout_seconds,
        settings.duckdb_memory_limit,
        settings.duckdb_threads,
        staging_root=settings.staging,
    )


def _count(text: str) -> int:
    """A count argument (--last, --limit): a whole number of at least 1."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give 1 or more") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1; give 1 or more")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    # A line per partition as it is done, also into a file or a pipe (where Python buffers blocks): a run
    # stopped or killed part-way has printed what it finished.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    parser = _Parser(prog="batch-predict", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo-data", help="write demo iris records into the landing folder")
    demo.add_argument("--start", type=date.fromisoformat, help="first day (default: DAYS-1 days before today, UTC)")
    demo.add_argument("--days", type=int, default=30, help="number of days (default 30)")
    demo.add_argument("--rows-per-day", type=int, default=2000, help="records per day (default 2000)")
    demo.add_argument("--files-per-day", type=int, default=4, help="arrival files per day (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")

    model = commands.add_parser("model", help="manage the model registry")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    model_commands.add_parser("list", help="registered versions and the aliases pointing at them")
    show = model_commands.add_parser("show", help="one version's metadata, as JSON")
    show.add_argument("version")
    register = model_commands.add_parser(
        "register", help="validate an artifact (joblib scikit-learn, or .onnx) and register it"
    )
    register.add_argument("path", type=Path)
    register.add_argument("--name", help="registered name (default: the file's stem)")
    register.add_argument(
        "--trained-at", type=_aware_time, help="ISO time, UTC unless it names a zone (default: the file's mtime)"
    )
    register.add_argument(
        "--features",
        help='comma-separated feature names, if the model does not carry them ("a,b" quotes a name with a comma)',
    )
    register.add_argument(
        "--classes", help='comma-separated class labels, to check against the model\'s ("a,b" quotes one with a comma)'
    )
    register.add_argument(
        "--reference",
        type=Path,
        help="Parquet or CSV of training features: saved as the model's reference statistics for drift checks",
    )
    promote = model_commands.add_parser("promote", help="point an alias at a version (history is kept)")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion", help="alias to move (default champion)")
    promote.add_argument(
        "--at",
        type=_aware_time,
        help="record a promotion that took effect earlier (ISO time; for point-in-time backfills of imported history)",
    )
    model_commands.add_parser(
        "train",
        help="run training_job now: load labels, train a candidate, promote it if it beats the champion",
    )
    train = model_commands.add_parser("train-demo", help="train the demo iris model, register it and make it the alias")
    train.add_argument("--trained-at", type=_aware_time, help="record this training time (ISO; default now)")
    train.add_argument(
        "--age-days", type=float, help="record it as trained this many days ago (to see the model-age checks)"
    )
    train.add_argument(
        "--keep-alias", action="store_true", help="register the model, but leave the alias alone if it already exists"
    )
    train.add_argument(
        "--fail-share",
        type=float,
        default=0.0,
        help="wrap the model so that about this share of records fail (to try the rerun modes); default 0",
    )

    status = commands.add_parser("status", help="one line per partition: counts, model, checks")
    status.add_argument("--last", type=_count, default=10, help="newest N partitions (default 10)")
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    errors = commands.add_parser("errors", help="records whose prediction failed (the error ledger)")
    errors.add_argument("--partition", help="only this partition's records")
    errors.add_argument("--dead", action="store_true", help="only records past BATCH_PREDICT_MAX_ATTEMPTS")
    errors.add_argument("--limit", type=_count, default=50, help="at most this many rows (default 50)")
    errors.add_argument("--json", action="store_true", help="print a JSON list instead of lines")

    unplaced = commands.add_parser(
        "unplaced", help="landed records in no partition: event time missing, unparseable, before START or future"
    )
    unplaced.add_argument("--limit", type=_count, default=50, help="at most this many rows (default 50)")
    unplaced.add_argument("--json", action="store_true", help="print a JSON object instead of lines")

    run = commands.add_parser(
        "materialize", help="run model_job and the newest partitions as real Dagster runs in DAGSTER_HOME"
    )
    run.add_argument("--last", type=_count, default=7, help="newest N complete partitions (default 7)")
    run.add_argument(
        "--allow-shrink",
        action="store_true",
        help="let a snapshot replace a partition's stored inputs with fewer source rows (landing files removed)",
    )

    repredict = commands.add_parser(
        "repredict",
        help="re-predict the partitions another model version made than the one that should (real Dagster runs)",
    )
    repredict.add_argument(
        "--since", type=_since, help="only partitions from this date or date-time on (ISO, e.g. 2026-03-01)"
    )
    repredict.add_argument("--dry-run", action="store_true", help="list the stale partitions, change nothing")

    queue = commands.add_parser(
        "backfill",
        help="queue a backfill of inputs and predictions for the daemon, as the UI's dialog does (in ranges of "
        "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN partitions per run)",
    )
    queue.add_argument("--from", dest="first", required=True, help="first partition key, e.g. 2026-03-01")
    queue.add_argument("--to", dest="last", required=True, help="last partition key, included")

    commands.add_parser(
        "sweep",
        help="mark failed the runs whose process is gone and remove old staging (every verb that runs does this first)",
    )

    args = parser.parse_args(argv)
    # Dagster flags the beta APIs the definitions use (BackfillPolicy) on every load; not news to a CLI user.
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview)")
    from batch_predict.interrupts import stop_signals_handled

    runs = _Runs()
    with stop_signals_handled(runs.cancel_current) as received, ExitStack() as scope:
        runs.received = received
        try:
            scope.enter_context(dotenv_applied(Path.cwd()))
            settings = load_settings()
            if args.command == "demo-data":
                return _demo_data(settings, args)
            if args.command == "model":
                return _model(settings, args, runs)
            if args.command == "status":
                return _status(settings, args.last, args.json)
            if args.command == "errors":
                return _errors(settings, args.partition, args.dead, args.limit, args.json)
            if args.command == "unplaced":
                return _unplaced(settings, args.limit, args.json)
            if args.command == "repredict":
                return _repredict(settings, args.since, args.dry_run, runs)
            if args.command == "sweep":
                return _sweep_verb(settings, runs)
            if args.command == "backfill":
                return _backfill(settings, args.first, args.last)
            return _materialize(settings, args.last, runs, args.allow_shrink)
        except (SettingsError, ModelError, SourceError, WarehouseError) as error:
            print(f"batch-predict: {redact(str(error))}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, Stopped, Interrupted) as stop:
            done = stop.summary if isinstance(stop, Interrupted) else f"`{args.command}` stopped before it finished"
            print(f"batch-predict: interrupted by {received.name}: {done}.", file=sys.stderr)
            return received.exit_code
        except BrokenPipeError:
            # The reader went away (`batch-predict status | head -1`): stop quietly, as `cat` does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise ModelError(f"Cannot read the reference data {path} ({error}); give a Parquet or CSV file.") from error


def _since(text: str) -> str:
    """A partition key to compare keys with: an ISO date or date-time, written as partition keys are."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or date-time such as 2026-03-01") from None
    return moment.strftime("%Y-%m-%d-%H:%M") if "T" in text or " " in text else moment.strftime("%Y-%m-%d")


def _aware_time(text: str) -> datetime:
    """An ISO time; without a zone it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time: give e.g. 2026-11-02 or 2026-11-02T06:00 (UTC unless it names a zone)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _demo_data(settings: Settings, args: argparse.Namespace) -> int:
    from batch_predict.demo import LABEL_DELAY_DAYS, write_labels, write_landing

    if args.days < 1 or args.rows_per_day < 1 or args.files_per_day < 1:
        raise SettingsError("--days, --rows-per-day and --files-per-day must be at least 1.")
    start = args.start or datetime.now(UTC).date() - timedelta(days=args.days - 1)
    days = write_landing(settings.landing, start, args.days, args.rows_per_day, args.seed, args.files_per_day)
    files = sum(len(day.paths) for day in days)
    print(f"wrote {len(days)} days x {args.rows_per_day} records ({files} files) from {start} into {settings.landing}")
    today = datetime.now(UTC).date()
    labels = write_labels(settings.labels, start, args.days, args.rows_per_day, today, args.seed)
    print(
        f"wrote the labels of {len(labels)} days into {settings.labels} (labels arrive {LABEL_DELAY_DAYS} days "
        "after their records)"
    )
    return 0


def _model(settings: Settings, args: argparse.Namespace, runs: _Runs) -> int:
    registry = Registry(settings.models)
    if args.model_command == "train-demo":
        trained_at = args.trained_at
        if args.age_days is not None:
            trained_at = datetime.now(UTC) - timedelta(days=args.age_days)
        return _train_demo(settings, args.fail_share, trained_at, args.keep_alias)
    if args.model_command == "train":
        return _train(settings, runs)
    if args.model_command == "list":
        pointing: dict[str, list[str]] = {}
        for alias, version in registry.aliases().items():
            pointing.setdefault(version, []).append(alias)
        for version in registry.versions():
            meta = registry.metadata(version)
            aliases = ",".join(pointing.get(version, [])) or "-"
            print(
                f"{version}  {meta.name}  {meta.format}  trained {meta.trained_at}  features {len(meta.features)}  "
                f"aliases {aliases}"
            )
        if not registry.versions():
            print(f"no models in {settings.models}")
        return 0
    if args.model_command == "show":
        print(json.dumps(asdict(registry.metadata(args.version)), indent=2))
        return 0
    if args.model_command == "promote":
        registry.set_alias(args.alias, args.version, at=args.at)
        print(f"{args.alias} -> {args.version}")
        return 0
    path: Path = args.path
    name = check_name(args.name or path.stem, "registered name", "Give one with --name NAME.")
    if not path.is_file():
        raise ModelError(f"No file at {path}.")
    metadata = registry.register_file(
        path,
        name=name,
        trained_at=args.trained_at or datetime.fromtimestamp(path.stat().st_mtime, UTC),
        features=list(split_names(args.features)) if args.features else None,
        classes=list(split_names(args.classes)) if args.classes else None,
        reference_data=_read_table(args.reference) if args.reference else None,
    )
    print(
        f"registered {metadata.name} as {metadata.version} (sha256 {metadata.checksum[:12]}); promote it with "
        f"`batch-predict model promote {metadata.version} --alias champion`"
    )
    return 0


def _train_demo(settings: Settings, fail_share: float, trained_at: datetime | None, keep_alias: bool) -> int:
    from batch_predict.demo import train_demo_model

    if not 0 <= fail_share < 1:
        raise SettingsError(f"--fail-share={fail_share} must be at least 0 and below 1.")
    # Before training: a refused alias must not leave a newly registered version behind.
    check_name(settings.model_alias, "alias", "Set BATCH_PREDICT_MODEL_ALIAS to another name.")
    registry = Registry(settings.models)
    if keep_alias and settings.model_alias in registry.aliases():
        version = registry.resolve(settings.model_alias)
        print(f"{settings.model_alias} stays at {version} (--keep-alias)")
        return 0
    metadata = train_demo_model(registry, settings.model_alias, fail_share=fail_share, trained_at=trained_at)
    print(
        f"{settings.model_alias} -> {metadata.name} {metadata.version} "
        f"(holdout accuracy {metadata.metrics['holdout_accuracy']:.3f}, sha256 {metadata.checksum[:12]}) "
        f"in {settings.models}"
    )
    return 0


def status_rows(settings: Settings, last: int, now: datetime) -> list[dict[str, Any]]:
    """Per-partition counts, model and check outcomes, newest partition first."""
    from batch_predict.checks import next_due_at
    from batch_predict.partitions import build_partitions

    warehouse = open_warehouse(settings)
    deadline = timedelta(hours=settings.deadline_hours)
    partitions_def = build_partitions(settings)
    stale = _stale_by_partition(settings, warehouse)
    drifted = warehouse.drifted()
    late = warehouse.late_partitions()
    quality: dict[str, dict[str, dict[str, Any]]] = {}
    for found in warehouse.prediction_quality():
        quality.setdefault(found["partition_key"], {})[found["model_version"]] = found
    rows = []
    for row in warehouse.partition_status(last):
        due_at = row["window_end"] + deadline if row["window_end"] is not None else None
        verdict = (
            deadline_verdict(
                row["completed_at"],
                row["every_input_predicted"],
                due_at,
                now,
                next_due_at(partitions_def, row["window_end"], deadline),
            )
            if due_at is not None
            else PENDING
        )
        rows.append(
            {
                "partition_key": row["partition_key"],
                "source_rows": row["source_rows"],
                "inputs": row["inputs"],
                "rejected": row["rejected"],
                "rejected_by_reason": json.loads(row["rejected_by_reason"] or "{}"),
                "predictions": row["predictions"],
                "failed": row["failed"],
                "dead": row["dead"],
                "carried_in": row["carried_in"],
                "carried_out": row["carried_out"],
                "mode": row["mode"],
                "model_name": row["model_name"],
                "model_version": row["model_version"],
                "stale": row["partition_key"] in stale if row["model_version"] else None,
                "should_be": stale.get(row["partition_key"]),
                **_realized(quality.get(row["partition_key"], {}).get(row["model_version"])),
                "drifted": drifted.get(row["partition_key"], []),
                "every_input_predicted": row["every_input_predicted"],
                # Landed records of the window its snapshot lacks (a late file), as the newest snapshot found.
                "late_records": late[row["partition_key"]]["missing_rows"] if row["partition_key"] in late else None,
                "deadline": verdict,
                "due_at": due_at.isoformat() if due_at else None,
                "run_id": row["run_id"],
                "updated_at": row["updated_at"].isoformat() if row["updated_at"] else None,
            }
        )
    return rows


def champion_line(settings: Settings, now: datetime) -> str:
    """The champion, how old it is, and whether that is past the age limits."""
    resource = _model_source(settings)
    try:
        meta = resource.metadata(resource.current_version(), FeatureContract.from_settings(settings))
    except Exception as error:  # status shows what it cannot read (a registry, an MLflow server) and goes on
        return f"champion: none ({type(error).__name__}: {redact(str(error)).splitlines()[0]})"
    age = ModelAge(meta.age_days(now), settings.model_max_age_days, settings.model_hard_max_age_days)
    return (
        f"{settings.model_alias}: {meta.name} {meta.version} ({meta.format}), trained {meta.trained_at[:19]}, "
        f"{age.age_days:.1f} days ago, {age.status()}"
    )


def _stale_by_partition(settings: Settings, warehouse: Warehouse) -> dict[str, str]:
    """Stale partition -> the version that should have made it (empty if that cannot be told)."""
    from batch_predict.partitions import build_partitions, partition_end
    from batch_predict.staleness import find_stale_partitions

    resource = _model_source(settings)
    try:
        staleness = find_stale_partitions(warehouse, resource, partition_end(build_partitions(settings)))
    except Exception:  # no model to compare with (champion_line says why): staleness cannot be told
        return {}
    return {stale.partition_key: stale.wanted for stale in staleness.stale}


def _realized(quality: dict[str, Any] | None) -> dict[str, Any]:
    if quality is None:
        return {"labelled": 0, "realized_accuracy": None, "realized_log_loss": None}
    return {
        "labelled": quality["labelled"],
        "realized_accuracy": round(quality["accuracy"], 4),
        "realized_log_loss": round(quality["log_loss"], 4) if quality["log_loss"] is not None else None,
    }


def _status(settings: Settings, last: int, as_json: bool) -> int:
    now = datetime.now(UTC)
    rows = status_rows(settings, last, now)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(champion_line(settings, now))
    unplaced = unplaced_line(settings)
    if unplaced:
        print(unplaced)
    late = late_line(settings)
    if late:
        print(late)
    if not rows:
        print(f"no partitions in {shown_warehouse(settings.warehouse)} yet")
        return 0
    table = [[header for _, header in STATUS_COLUMNS]]
    for row in rows:
        cells = {
            **row,
            "run_id": (row["run_id"] or "")[:8],
            "updated_at": (row["updated_at"] or "")[:19],
            "drifted": ",".join(row["drifted"]) or "-",
            "stale": None if row["stale"] is None else f"yes ({row['should_be']})" if row["stale"] else "no",
        }
        table.append(["-" if cells[key] is None else str(cells[key]) for key, _ in STATUS_COLUMNS])
    widths = [max(len(line[i]) for line in table) for i in range(len(STATUS_COLUMNS))]
    for line in table:
        print(
            "  ".join(
                cell.rjust(width) if cell.isdigit() else cell.ljust(width)
                for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )
    summary = deadline_summary((row["deadline"] for row in rows), settings.deadline_hours)
    if summary:
        print(summary)
    return 0


def unplaced_line(settings: Settings) -> str | None:
    """`unplaced: N records (reason: count, ...)` while landed records are in no partition, else None."""
    warehouse = open_warehouse(settings)
    counts, _ = warehouse.unplaced(limit=1)
    total = sum(counts.values())
    if not total:
        return None
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))
    return f"unplaced: {total} records ({reasons})"


def late_line(settings: Settings) -> str | None:
    """`late files: ...` while partitions snapshotted earlier lack records their window holds (`late_file`: a file
    landed after their snapshot; `keeper_lost`: a copy they rejected should keep its record id now), else None."""
    late = open_warehouse(settings).late_partitions()
    if not late:
        return None
    keys = sorted(late)
    shown = ", ".join(
        f"{key} ({late[key]['missing_rows']} records, {'+'.join(late[key]['reasons'])})" for key in keys[:10]
    )
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    return f"late files: {len(keys)} partition(s) lack records their window holds: {shown}{more}; {rerun_hint(keys)}"


def _unplaced(settings: Settings, limit: int, as_json: bool) -> int:
    warehouse = open_warehouse(settings)
    counts, rows = warehouse.unplaced(limit)
    for row in rows:
        row["first_seen_at"] = row["first_seen_at"].isoformat() if row["first_seen_at"] else None
    if as_json:
        print(json.dumps({"total": sum(counts.values()), "by_reason": counts, "records": rows}, indent=2))
        return 0
    for row in rows:
        print(
            f"{row['reason']}  {row['record_id']}  {row['source_file']}  event time {row['raw_event_time']!r}  "
            f"first seen {(row['first_seen_at'] or '')[:19]}"
        )
    if not rows:
        print("every landed record is in a partition")
    elif sum(counts.values()) > len(rows):
        print(f"... {sum(counts.values()) - len(rows)} more (--limit)")
    return 0


def _errors(settings: Settings, partition: str | None, dead: bool, limit: int, as_json: bool) -> int:
    warehouse = open_warehouse(settings)
    rows = warehouse.prediction_errors(partition, dead, limit)
    for row in rows:
        row["failed_at"] = row["failed_at"].isoformat() if row["failed_at"] else None
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = "dead" if row["dead"] else "failed"
        print(
            f"{row['partition_key']}  {row['record_id']}  {state} after attempt {row['attempt']} "
            f"(in {row['attempted_in_partition']})  {row['error']}"
        )
    if not rows:
        print("no failed records")
    return 0


def _train(settings: Settings, runs: _Runs) -> int:
    """Run training_job, then model_job (to record a promoted model), in-process against DAGSTER_HOME."""
    from batch_predict.definitions import build_definitions

    defs = build_definitions(settings)
    model_run = None
    with _dagster_instance(settings, runs):
        try:
            result = runs.execute(defs.resolve_job_def("training_job"), "the training run", run_config=QUIET)
            if result.success:
                model_run = runs.execute(defs.resolve_job_def("model_job"), "the model run", run_config=QUIET)
        except (Interrupted, KeyboardInterrupt, Stopped) as stop:
            raise _stopped(stop, [], []) from None
    if not result.success:
        print(f"batch-predict: training_job failed (run {result.run_id}): {_failure_message(result)}", file=sys.stderr)
        return 1
    [materialization] = result.asset_materializations_for_node("trained_model")
    decision = materialization.metadata["decision"].value
    print(f"candidate {materialization.metadata['candidate_version'].value}: {decision}")
    if model_run is not None and not model_run.success:
        print(
            f"batch-predict: model_job failed (run {model_run.run_id}): {_failure_message(model_run)}", file=sys.stderr
        )
        return 1
    return 0


def _failure_message(result: Any) -> str:
    """What made a run fail, in the words of the step that failed (not Dagster's wrapper)."""
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    if failure is None or failure.step_failure_data is None:
        return "see the run in the Dagster UI"
    user = failure.step_failure_data.user_failure_data
    if user is not None and user.description:
        return str(user.description)
    error = failure.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else "see the run in the Dagster UI"


def _repredict(settings: Settings, since: str | None, dry_run: bool, runs: _Runs) -> int:
    """List the stale partitions; unless a dry run, re-predict exactly those as Dagster runs in DAGSTER_HOME."""
    from batch_predict.definitions import build_definitions
    from batch_predict.partitions import build_partitions, partition_end
    from batch_predict.schedules import FULL_REFRESH, REPREDICT_TAG
    from batch_predict.staleness import find_stale_partitions

    model_registry = _model_source(settings)
    warehouse = open_warehouse(settings)
    staleness = find_stale_partitions(warehouse, model_registry, partition_end(build_partitions(settings)), since)
    for key, why in sorted(staleness.undecided.items()):
        print(f"partition {key}: skipped: {why}")
    if not staleness.stale:
        print("no stale partitions: every predicted partition was made by the model that should make it")
        return 0
    for stale in staleness.stale:
        print(f"partition {stale.partition_key}: made by {','.join(stale.made_by)}, should be {stale.wanted}")
    if dry_run:
        return 0
    defs = build_definitions(settings)
    failed = []
    planned = [stale.partition_key for stale in staleness.stale]
    done: list[str] = []
    with _dagster_instance(settings, runs):
        try:
            model_run = runs.execute(defs.resolve_job_def("model_job"), "the model run", run_config=QUIET)
            if not model_run.success:
                failed.append(model_run.run_id)
            for stale in staleness.stale:
                result = runs.execute(
                    defs.resolve_job_def("repredict_job"),
                    stale.partition_key,
                    partition_key=stale.partition_key,
                    run_config={**FULL_REFRESH, **QUIET},
                    tags={REPREDICT_TAG: stale.wanted},
                )
                done.append(stale.partition_key)
                print(
                    f"partition {stale.partition_key}: {'re-predicted' if result.success else 'FAILED'} "
                    f"(run {result.run_id[:8]})"
                )
                if not result.success:
                    failed.append(result.run_id)
        except (Interrupted, KeyboardInterrupt, Stopped) as stop:
            raise _stopped(stop, done, planned) from None
    return _report_failed(failed)


def _model_source(settings: Settings) -> ModelSource:
    """The model source the assets use: the local registry's alias, or the MLflow URI."""
    from batch_predict.models.source import ModelSource

    return ModelSource.from_settings(settings)


def _report_failed(run_ids: list[str]) -> int:
    """Name the runs that failed (exit 1), or exit 0 when none did."""
    if not run_ids:
        return 0
    print(
        f"batch-predict: {len(run_ids)} run(s) failed: {', '.join(run_ids)}; see them in the Dagster UI.",
        file=sys.stderr,
    )
    return 1


def predictions_run_config(allow_shrink: bool) -> dict[str, Any]:
    """The run config of each predictions_job run `materialize` launches."""
    if not allow_shrink:
        return QUIET
    return {**QUIET, "ops": {"inputs": {"config": {"allow_shrink": True}}}}


def _materialize(settings: Settings, last: int, runs: _Runs, allow_shrink: bool = False) -> int:
    """Run model_job, then predictions_job for each of the newest `last` complete partitions."""

    from batch_predict.definitions import build_definitions

    warehouse = open_warehouse(settings)
    if warehouse.dialect == "postgres":
        # A server that refuses or cannot be reached fails here in one line, not in every run's step.
        try:
            warehouse.query("SELECT 1 AS reachable")
        except WarehouseUnavailable as error:
            raise WarehouseUnavailable(
                error.reason, then="no run was started: run materialize again once it is up"
            ) from None
    defs = build_definitions(settings)
    partitions_def = defs.resolve_job_def("predictions_job").partitions_def
    assert partitions_def is not None
    keys = partitions_def.get_partition_keys()[-last:]
    if not keys:
        print(
            f"batch-predict: no complete partition yet: the first {settings.cadence} partition starts at "
            f"{settings.start.isoformat()} ({settings.timezone}) and can run once it has closed. Nothing was run; "
            "set BATCH_PREDICT_START earlier to predict older records.",
            file=sys.stderr,
        )
        return 0
    done: list[str] = []
    with _dagster_instance(settings, runs):
        try:
            results = [
                runs.execute(
                    defs.resolve_job_def("model_job"),
                    "the model run",
                    run_config=QUIET,
                )
            ]
            for key in keys:
                results.append(
                    runs.execute(
                        defs.resolve_job_def("predictions_job"),
                        key,
                        partition_key=key,
                        run_config=predictions_run_config(allow_shrink),
                    )
                )
                done.append(key)
                print(f"partition {key}: {'ok' if results[-1].success else 'FAILED'} (run {results[-1].run_id[:8]})")
            results.append(runs.execute(defs.resolve_job_def("monitoring_job"), "the monitoring run", run_config=QUIET))
        except (Interrupted, KeyboardInterrupt, Stopped) as stop:
            raise _stopped(stop, done, keys) from None
    failed = [result.run_id for result in results if not result.success]
    return _report_failed(failed)


def _backfill(settings: Settings, first: str, last: str) -> int:
    """Queue an asset backfill of `inputs` and `predictions` from `first` to `last` for the daemon.

    It goes through Dagster's GraphQL API (`dagster-graphql`, in-process), as the UI's dialog does,
    because an asset backfill honours the assets' BackfillPolicy (ranges of partitions per run),
    while `dagster job backfill` makes one run per partition whatever the policy.
    """
    from batch_predict.cluster import LAUNCH, range_backfill_variables
    from batch_predict.partitions import build_partitions

    keys = build_partitions(settings).get_partition_keys()
    for key in (first, last):
        if key not in keys:
            newest = f"{keys[0]} to {keys[-1]}" if keys else "none yet"
            raise SettingsError(f"{key!r} is not a {settings.cadence} partition key (the partitions: {newest}).")
    chosen = keys[keys.index(first) : keys.index(last) + 1]
    if not chosen:
        raise SettingsError(f"--from {first} is after --to {last}.")
    _use_project_dagster_home()
    variables = range_backfill_variables(first, last, ("inputs", "predictions"))
    command = [str(Path(sys.executable).parent / "dagster-graphql"), "-m", "batch_predict.definitions"]
    done = subprocess.run([*command, "-t", LAUNCH, "-v", json.dumps(variables)], capture_output=True, text=True)
    # dagster-graphql prints its code server's log lines, then the result as one line of JSON.
    result = next((line for line in reversed(done.stdout.splitlines()) if line.startswith("{")), "")
    try:
        launched = json.loads(result)["data"]["launchPartitionBackfill"]
    except (ValueError, KeyError, TypeError):
        print(f"batch-predict: the backfill was not queued:\n{done.stdout}{done.stderr[-3000:]}", file=sys.stderr)
        return 1
    if launched.get("__typename") != "LaunchBackfillSuccess":
        print(f"batch-predict: the backfill was not queued: {launched.get('message', launched)}", file=sys.stderr)
        return 1
    per_run = settings.max_partitions_per_run
    print(
        f"Backfill {launched['backfillId']} queued: {len(chosen)} {settings.cadence} partitions of inputs and "
        f"predictions ({first} to {last}), up to {per_run} per run, so {-(-len(chosen) // per_run)} run(s). The "
        "daemon of a running `dagster dev` (or `dagster-daemon run`) launches them; the UI shows the backfill "
        "under Overview > Backfills."
    )
    return 0


def _sweep_verb(settings: Settings, runs: _Runs) -> int:
    """Only the sweep every verb that uses DAGSTER_HOME starts with."""
    with _dagster_instance(settings, runs):
        return 0


class Interrupted(Exception):
    """A stop signal ended the verb; `summary` says what was done and what was not."""

    def __init__(self, label: str | None = None, outcome: str | None = None, summary: str = "") -> None:
        super().__init__(summary)
        self.label = label
        self.outcome = outcome
        self.summary = summary or (f"{label} {outcome}" if label else "no run was in flight")


def _stopped(stop: BaseException, done: list[str], planned: Sequence[str]) -> Interrupted:
    """What an interrupted loop over partitions did: "3 of 7 partitions done, 2026-03-04 canceled, 3 not started"."""
    label = stop.label if isinstance(stop, Interrupted) else None
    outcome = stop.outcome if isinstance(stop, Interrupted) else None
    finished = [*done, label] if label in planned and outcome == "done" else done
    parts = [f"{len(finished)} of {len(planned)} partitions done"] if planned else []
    if label is not None and outcome != "done":
        parts.append(f"{label} {outcome}")
    elif label is not None and label not in planned:
        parts.append(f"{label} done")
    if planned:
        left = [key for key in planned if key not in finished and key != label]
        parts.append(f"{len(left)} not started")
    return Interrupted(label, outcome, ", ".join(parts) or "no run was in flight")


class _Runs:
    """The CLI's in-process Dagster runs, one at a time: each tagged with this process, and canceled on a stop signal."""

    def __init__(self) -> None:
        from batch_predict.interrupts import Received

        self.received = Received()
        self.instance: dg.DagsterInstance | None = None
        self.current: str | None = None
        self.stopping = False

    def cancel_current(self, signum: int) -> None:
        """Called from the signal thread: mark the run in flight CANCELING, so the interrupt cancels it."""
        import signal

        self.stopping = True
        run_id, instance = self.current, self.instance
        run = instance.get_run_by_id(run_id) if instance is not None and run_id is not None else None
        if instance is not None and run is not None and not run.is_finished:
            instance.report_run_canceling(
                run, message=f"batch-predict received {signal.Signals(signum).name}; canceling the run."
            )

    def execute(self, job: dg.JobDefinition, label: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        """Execute `job` in-process in the instance; raise Interrupted naming `label` if a stop signal came."""
        import dagster as dg

        from batch_predict.interrupts import in_worker
        from batch_predict.runs import worker_tags

        assert self.instance is not None
        run_id = str(uuid.uuid4())
        tags = {**kwargs.pop("tags", {}), **worker_tags(run_id)}
        self.current = run_id
        result = None
        try:
            # In a worker thread, so that Dagster does not take over SIGINT (see batch_predict.interrupts).
            result = in_worker(
                self.received,
                lambda: job.execute_in_process(
                    instance=self.instance, run_id=run_id, tags=tags, raise_on_error=False, **kwargs
                ),
            )
        except (KeyboardInterrupt, Stopped, dg.DagsterExecutionInterruptedError):
            self.stopping = True
        finally:
            self.current = None
        if self.stopping:
            raise Interrupted(label, self._settle(run_id))
        assert result is not None
        return result

    def _settle(self, run_id: str) -> str:
        """End an interrupted run as canceled if Dagster did not; say how it ended."""
        import dagster as dg

        assert self.instance is not None
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return "not started"
        if not run.is_finished:
            self.instance.report_run_canceled(run, message="batch-predict was interrupted before the run ended.")
            return "canceled"
        return {dg.DagsterRunStatus.SUCCESS: "done", dg.DagsterRunStatus.CANCELED: "canceled"}.get(run.status, "failed")


@contextmanager
def _dagster_instance(settings: Settings, runs: _Runs) -> Iterator[dg.DagsterInstance]:
    """The DAGSTER_HOME instance, swept of dead runs and old staging first; `runs` launch into it."""
    import dagster as dg

    _use_project_dagster_home()
    with dg.DagsterInstance.get() as instance:
        _sweep(settings, instance)
        runs.instance = instance
        try:
            yield instance
        finally:
            runs.instance = None


def _use_project_dagster_home() -> None:
    """Without DAGSTER_HOME, use the project's dagster_home/ (beside workspace.yaml here), as `make demo` does."""
    if os.environ.get("DAGSTER_HOME", "").strip():
        return
    here = Path.cwd()
    if not (here / "workspace.yaml").is_file():
        raise SettingsError(
            f"DAGSTER_HOME is not set and {here} is not a batch_predict project folder (no workspace.yaml): "
            "run batch-predict from the project folder (it then uses ./dagster_home), or export "
            "DAGSTER_HOME=/absolute/path/to/dagster_home."
        )
    home = here / "dagster_home"
    home.mkdir(exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    print(f"batch-predict: DAGSTER_HOME is not set; using {home} (the project's)", file=sys.stderr)


def _sweep(settings: Settings, instance: dg.DagsterInstance) -> None:
    """Fail the runs whose process died, and remove staging that dead runs left; say what was done."""
    from batch_predict.batch import remove_stale_staging
    from batch_predict.runs import sweep_dead_runs

    for run in sweep_dead_runs(instance):
        ended = "canceled" if run.status == "CANCELING" else "failed"
        print(
            f"batch-predict: run {run.run_id} ({run.job_name}) was {run.status} but its process (PID {run.pid}) "
            f"is gone: marked {ended}",
            file=sys.stderr,
        )
    for name in remove_stale_staging(settings.staging, settings.staging_max_age_hours):
        print(
            f"batch-predict: removed the staging of partition {name}: untouched for more than "
            f"BATCH_PREDICT_STAGING_MAX_AGE_HOURS={settings.staging_max_age_hours:g} and no run holds it",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
