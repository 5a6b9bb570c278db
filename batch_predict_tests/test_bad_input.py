"""Each kind of bad input fails with a message naming the problem and the fix, and changes no row."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from batch_predict.contract import FeatureContract
from batch_predict.models.registry import Registry
from batch_predict.settings import IRIS_FEATURES, Settings, SettingsError, load_settings
from batch_predict.warehouse import Warehouse, WarehouseDamaged

from .conftest import run_assets

TABLES = ("inputs", "rejected_inputs", "input_stats", "predictions", "prediction_errors", "prediction_stats")


def snapshot(path: Path) -> dict[str, Any]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            table: con.execute(f"SELECT count(*), list(DISTINCT run_id ORDER BY run_id) FROM {table}").fetchall()
            for table in TABLES
        }


def run(settings: Settings, assets: list[str], key: str) -> dg.ExecuteInProcessResult:
    return run_assets(settings, assets, key, raise_on_error=False)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run failed outside a step"
    return str(failures[0].event_specific_data)


def records(ids: list[str], day: datetime, **overrides: list[Any]) -> pa.Table:
    columns: dict[str, Any] = {
        "record_id": ids,
        "event_time": [day + timedelta(hours=1)] * len(ids),
        **{name: [1.0] * len(ids) for name in IRIS_FEATURES},
    }
    return pa.table(columns | overrides)


@pytest.fixture
def good(settings: Settings, landing: Path, registry: Registry) -> Settings:
    for key in ("2026-03-01", "2026-03-02"):
        assert run(settings, ["inputs", "predictions"], key).success
    return settings


def not_parquet(settings: Settings) -> tuple[Settings, list[str]]:
    (settings.landing / "2026-03-01" / "upload.parquet").write_text("id,time\n1,2\n")
    return settings, ["inputs"]


def missing_column(settings: Settings) -> tuple[Settings, list[str]]:
    table = records(["x"], datetime(2026, 3, 1, tzinfo=UTC)).drop_columns(["petal_width"])
    pq.write_table(table, settings.landing / "2026-03-01" / "late.parquet")
    return settings, ["inputs"]


def wrong_type(settings: Settings) -> tuple[Settings, list[str]]:
    table = records(["x"], datetime(2026, 3, 1, tzinfo=UTC), sepal_width=["3,5"])
    pq.write_table(table, settings.landing / "2026-03-01" / "late.parquet")
    return settings, ["inputs"]


def all_invalid(settings: Settings) -> tuple[Settings, list[str]]:
    # Every record of the day breaks the contract: rerunning 2026-03-01 must keep its old snapshot.
    for path in (settings.landing / "2026-03-01").iterdir():
        table = pq.read_table(path)
        pq.write_table(table.set_column(2, "sepal_length", pa.array([-1.0] * table.num_rows)), path)
    return settings, ["inputs"]


def missing_registry(settings: Settings) -> tuple[Settings, list[str]]:
    return load_settings(_env(settings, BATCH_PREDICT_MODELS=str(settings.models.parent / "nowhere"))), ["predictions"]


def corrupt_model(settings: Settings) -> tuple[Settings, list[str]]:
    artifact = settings.models / "v1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    return settings, ["predictions"]


def other_features(settings: Settings) -> tuple[Settings, list[str]]:
    registry = Registry(settings.models)
    x = np.random.default_rng(0).normal(size=(30, 3))
    model = LogisticRegression().fit(x, ["a", "b", "c"] * 10)
    meta = registry.register(
        model,
        name="other",
        trained_at=datetime.now(UTC),
        features=[{"name": n, "dtype": "float64"} for n in ("height", "width", "depth")],
        metrics={},
        training_window={},
    )
    registry.set_alias("champion", meta.version)
    return settings, ["predictions"]


def not_duckdb(settings: Settings) -> tuple[Settings, list[str]]:
    impostor = Path(settings.warehouse).parent / "notes.duckdb"
    impostor.write_text("my notes")
    return load_settings(_env(settings, BATCH_PREDICT_WAREHOUSE=str(impostor))), ["inputs"]


def staging_is_a_file(settings: Settings) -> tuple[Settings, list[str]]:
    taken = Path(settings.warehouse).parent / "staging-notes.txt"
    taken.write_text("not a folder")
    return load_settings(_env(settings, BATCH_PREDICT_STAGING=str(taken))), ["predictions"]


def _env(settings: Settings, **overrides: str) -> dict[str, str]:
    return {
        "BATCH_PREDICT_WAREHOUSE": str(settings.warehouse),
        "BATCH_PREDICT_LANDING": str(settings.landing),
        "BATCH_PREDICT_MODELS": str(settings.models),
        "BATCH_PREDICT_START": "2026-03-01",
        **overrides,
    }


CASES: dict[str, tuple[Callable[[Settings], tuple[Settings, list[str]]], list[str]]] = {
    "landing file is not Parquet": (not_parquet, ["upload.parquet", "Move the unreadable file"]),
    "file misses a feature column": (missing_column, ["late.parquet has no column(s) petal_width", "Fix or move"]),
    "column of the wrong type": (wrong_type, ["late.parquet stores feature sepal_width as UTF8, not a number"]),
    "every row invalid": (all_invalid, ["break the feature contract", "BATCH_PREDICT_MAX_REJECTED_SHARE"]),
    "missing model registry": (missing_registry, ["No model registry at", "batch-predict model train-demo"]),
    "corrupt model artifact": (corrupt_model, ["model.joblib is corrupt or was changed", "register a new model"]),
    "model features do not match": (
        other_features,
        ["expects features ['height', 'width', 'depth']", "BATCH_PREDICT_FEATURES"],
    ),
    "warehouse is not DuckDB": (not_duckdb, ["notes.duckdb as a DuckDB database", "BATCH_PREDICT_WAREHOUSE"]),
    "staging folder is a file": (
        staging_is_a_file,
        ["Cannot use the staging folder", "staging-notes.txt", "set BATCH_PREDICT_STAGING to a folder"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_names_the_problem_and_changes_nothing(good: Settings, case: str) -> None:
    fault, expected = CASES[case]
    before = snapshot(good.warehouse)
    settings, assets = fault(good)
    message = failure_message(run(settings, assets, "2026-03-01"))
    for text in expected:
        assert text in message, message
    assert snapshot(good.warehouse) == before


def test_an_unusable_staging_folder_fails_at_once_without_retries(good: Settings) -> None:
    """A setup error is no passing I/O error: the step is not retried (each retry waits seconds)."""
    settings, _ = staging_is_a_file(good)
    result = run(settings, ["predictions"], "2026-03-01")
    assert "StagingError" in failure_message(result)
    kinds = [event.event_type_value for event in result.all_events]
    assert kinds.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in kinds, kinds


def test_a_bad_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="BATCH_PREDICT_ON_FAILURE='sometimes' is not valid: use one of retry_all"):
        load_settings({"BATCH_PREDICT_ON_FAILURE": "sometimes"})


def test_an_empty_partition_succeeds_and_says_so(good: Settings) -> None:
    before = snapshot(good.warehouse)
    result = run(good, ["inputs", "predictions"], "2026-03-10")
    assert result.success
    [mat] = result.asset_materializations_for_node("inputs")
    assert mat.metadata["empty_partition"].value is True
    assert "the partition is empty" in str(mat.metadata["warning"].value)
    after = snapshot(good.warehouse)
    assert after["inputs"] == before["inputs"] and after["predictions"] == before["predictions"]
    assert after["input_stats"][0][0] == before["input_stats"][0][0] + 1
    assert after["prediction_stats"][0][0] == before["prediction_stats"][0][0] + 1


def damage_block(warehouse: str, table: str | None, how: str) -> None:
    """Damage a storage block of the DuckDB file: the first of `table`'s, or (None) the catalog's first
    metadata block, which every open reads. Zero it (its checksum no longer matches) or cut the file
    short where it starts (the file no longer holds it)."""
    with duckdb.connect(warehouse, read_only=True) as con:
        where = (
            f"(SELECT min(block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0)"
            if table
            else "(SELECT min(block_id) FROM pragma_metadata_info())"
        )
        [(block, block_size)] = con.execute(f"SELECT {where}, block_size FROM pragma_database_size()").fetchall()
    start = 3 * 4096 + block * block_size  # after the file's three 4 KiB headers
    with Path(warehouse).open("r+b") as handle:
        if how == "zeroed":
            handle.seek(start)
            handle.write(b"\0" * block_size)
        else:
            handle.truncate(start)


@pytest.mark.parametrize(
    ("table", "how"),
    [("prediction_stats", "zeroed"), ("prediction_drift", "zeroed"), (None, "zeroed"), (None, "cut short")],
)
def test_a_damaged_warehouse_file_fails_the_run_naming_the_damage(
    make_settings: Callable[..., Settings], good: Settings, table: str | None, how: str
) -> None:
    """A block DuckDB cannot read, in a table the publish reads, in one only the drift measurement reads,
    or in the catalog every open reads, fails the run with a message that names the file and what to do.
    The step is retried (a reader may have met a block mid-change), and fails the same way again."""
    damage_block(good.warehouse, table, how)
    result = run(make_settings(step_retries="1"), ["predictions"], "2026-03-02")
    message = failure_message(result)
    for text in (f"The warehouse {good.warehouse} may be damaged", "A damaged warehouse file"):
        assert text in message, message
    assert len([e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 1


def test_a_block_cut_off_under_an_open_session_is_named_as_damage_by_any_path_to_the_file(tmp_path: Path) -> None:
    """DuckDB names the file by its real path: a warehouse opened through a symlink still recognises it."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    warehouse = Warehouse(tmp_path / "link" / "w.duckdb", FeatureContract("record_id", "event_time", ("a",)))
    with warehouse.session() as session:
        session.execute("CREATE TABLE t AS SELECT range AS x, random() AS y FROM range(500000)")
    with warehouse.session(read_only=True) as session:
        [(block, block_size)] = session.fetchall(
            "SELECT (SELECT min(block_id) FROM pragma_storage_info('t') WHERE block_id >= 0), block_size "
            "FROM pragma_database_size()"
        )
    with (
        pytest.raises(WarehouseDamaged, match="Could not read enough bytes") as raised,
        warehouse.session(read_only=True) as session,  # the catalog is read; the table's blocks are not yet
    ):
        with (real / "w.duckdb").open("r+b") as handle:
            handle.truncate(3 * 4096 + block * block_size)
        session.fetchall("SELECT sum(y) FROM t")
    assert f"The warehouse {tmp_path / 'link' / 'w.duckdb'} may be damaged" in str(raised.value)
