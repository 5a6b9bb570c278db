from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.settings import Settings, load_settings
from batch_predict.warehouse import Source, Warehouse

pytest_plugins = ["batch_predict_tests.servers_fixtures"]

FIRST_DAY = date(2026, 3, 1)
DAYS = 3
ROWS_PER_DAY = 400


@pytest.fixture(autouse=True)
def _labels_in_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands that read settings from the environment never write labels into the repository."""
    monkeypatch.setenv("BATCH_PREDICT_LABELS", str(tmp_path / "labels"))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The warehouse backend of the test: DuckDB, unless the test is marked `BOTH_BACKENDS`."""
    return str(getattr(request, "param", "duckdb"))


# Runs a test once on a DuckDB file and once on a real PostgreSQL database of its own.
BOTH_BACKENDS = pytest.mark.parametrize("backend", ["duckdb", "postgres"], indirect=True)


@pytest.fixture
def warehouse_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """BATCH_PREDICT_WAREHOUSE for this test: a DuckDB file in its temp dir, or a fresh PostgreSQL database."""
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "warehouse.duckdb")


@pytest.fixture
def make_settings(tmp_path: Path, warehouse_location: str) -> Callable[..., Settings]:
    """Settings whose paths all live in this test's temp dir; keyword arguments override variables."""

    def make(**overrides: str) -> Settings:
        env = {
            "BATCH_PREDICT_WAREHOUSE": warehouse_location,
            "BATCH_PREDICT_STAGING": str(tmp_path / "staging"),
            "BATCH_PREDICT_LANDING": str(tmp_path / "landing"),
            "BATCH_PREDICT_MODELS": str(tmp_path / "models"),
            "BATCH_PREDICT_LABELS": str(tmp_path / "labels"),
            "BATCH_PREDICT_START": "2026-03-01",
            **{f"BATCH_PREDICT_{key.upper()}": value for key, value in overrides.items()},
        }
        return load_settings(env)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def landing(settings: Settings) -> Path:
    write_landing(settings.landing, FIRST_DAY, DAYS, ROWS_PER_DAY, seed=7, files_per_day=3)
    return settings.landing


@pytest.fixture
def registry(settings: Settings) -> Registry:
    registry = Registry(settings.models)
    train_demo_model(registry, "champion")
    return registry


@pytest.fixture
def warehouse(settings: Settings) -> Warehouse:
    return Warehouse(
        settings.warehouse,
        FeatureContract.from_settings(settings),
        lock_timeout_seconds=30,
        staging_root=settings.staging,
    )


@pytest.fixture
def source(settings: Settings) -> Source:
    return Source(settings.landing, settings.source_glob)


def stored_rows(warehouse: Warehouse, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only statement as tuples, on either backend (SQL both accept, `$name` parameters).

    Tuples, not `Warehouse.query`'s dicts: PostgreSQL names every unnamed column `?column?`, so
    a row of several unnamed subqueries would keep only the last as a dict.
    """
    with warehouse.session(read_only=True) as session:
        return session.fetchall(sql, params)


def change_stored_rows(warehouse: Warehouse, *statements: str, **params: Any) -> None:
    """Run statements that change stored rows, in one transaction, on either backend: how a test sets up
    a warehouse state that the application itself never writes."""
    with warehouse.session() as session, session.transaction():
        for sql in statements:
            session.execute(sql, params)


def use_settings_in_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """Point the CLI, which reads its settings from the environment, at the test's warehouse, landing and models."""
    for name, value in {
        "BATCH_PREDICT_WAREHOUSE": settings.warehouse,
        "BATCH_PREDICT_LANDING": settings.landing,
        "BATCH_PREDICT_MODELS": settings.models,
        "BATCH_PREDICT_START": "2026-03-01",
        **extra,
    }.items():
        monkeypatch.setenv(name, str(value))


def run_assets(
    settings: Settings, selection: list[str], partition_key: str | None = None, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Materialize the named assets in-process, as one run on a fresh ephemeral instance."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(name) for name in selection],
        partition_key=partition_key,
        instance=kwargs.pop("instance", None) or dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def run_model_job(settings: Settings, **kwargs: Any) -> dg.ExecuteInProcessResult:
    """Run model_job in-process (it records the `model` asset when the champion changed), on a fresh ephemeral instance unless given one."""
    job = build_definitions(settings).resolve_job_def("model_job")
    return job.execute_in_process(instance=kwargs.pop("instance", None) or dg.DagsterInstance.ephemeral(), **kwargs)


def recorded_models(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    """The materializations of the `model` asset that a model_job run recorded."""
    return result.asset_materializations_for_node("record_model")
