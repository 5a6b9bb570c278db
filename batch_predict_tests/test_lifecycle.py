"""A promotion makes older partitions stale; re-prediction fixes exactly those and keeps the old versions queryable."""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from batch_predict.assets import GROUP
from batch_predict.cli import main
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.models.types import ModelError
from batch_predict.partitions import build_partitions, partition_end
from batch_predict.resources import ModelRegistryResource, build_resources
from batch_predict.settings import Settings, SettingsError
from batch_predict.staleness import find_stale_partitions
from batch_predict.warehouse import Warehouse
from batch_predict_tests.conftest import (
    BOTH_BACKENDS,
    FIRST_DAY,
    change_stored_rows,
    recorded_models,
    run_assets,
    run_model_job,
    stored_rows,
)

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def stale_keys(settings: Settings, warehouse: Warehouse, since: str | None = None) -> list[str]:
    resource = build_resources(settings)["model_registry"]
    assert isinstance(resource, ModelRegistryResource)
    return [
        s.partition_key
        for s in find_stale_partitions(
            warehouse, resource.models(), partition_end(build_partitions(settings)), since
        ).stale
    ]


def versions_by_partition(warehouse: Warehouse, table: str = "predictions") -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for key, version, count in stored_rows(
        warehouse,
        f"SELECT partition_key, model_version, count(*) FROM {table} "
        "GROUP BY partition_key, model_version ORDER BY partition_key, model_version",
    ):
        found.setdefault(key, {})[version] = count
    return found


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in {
        "WAREHOUSE": settings.warehouse,
        "STAGING": settings.staging,  # a PostgreSQL warehouse's default is data/staging in the working folder
        "LANDING": settings.landing,
        "MODELS": settings.models,
        "START": "2026-03-01",
    }.items():
        monkeypatch.setenv(f"BATCH_PREDICT_{name}", str(value))
    return home


@BOTH_BACKENDS
def test_promotion_marks_older_partitions_stale_and_repredict_fixes_exactly_those(
    settings: Settings,
    landing: Path,
    registry: Registry,
    warehouse: Warehouse,
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assets = build_definitions(settings).assets
    assert assets is not None
    with dg.DagsterInstance.get() as instance:
        assert run_model_job(settings, instance=instance).success
        for day in DAYS:
            assert run_assets(settings, ["inputs", "predictions"], day, instance=instance).success
        inputs = {day: count for day, counts in versions_by_partition(warehouse).items() for count in counts.values()}
        assert versions_by_partition(warehouse) == {day: {"v1": inputs[day]} for day in DAYS}
        assert stale_keys(settings, warehouse) == []

        v2 = train_demo_model(registry, "champion", seed=1)
        assert v2.version == "v2"
        assert stale_keys(settings, warehouse) == DAYS
        assert stale_keys(settings, warehouse, since="2026-03-02") == DAYS[1:]

        # Dagster marks the partitions unsynced once model_job recorded the new model (its data version).
        resolver = get_stale_status_resolver(instance, list(assets))  # type: ignore[arg-type]
        assert {resolver.get_status(dg.AssetKey("predictions"), day) for day in DAYS} == {StaleStatus.FRESH}
        assert run_model_job(settings, instance=instance).success
        resolver = get_stale_status_resolver(instance, list(assets))  # type: ignore[arg-type]
        assert {resolver.get_status(dg.AssetKey("predictions"), day) for day in DAYS} == {StaleStatus.STALE}

        assert main(["repredict", "--since", "2026-03-02", "--dry-run"]) == 0
        assert "partition 2026-03-02: made by v1, should be v2" in capsys.readouterr().out
        assert stale_keys(settings, warehouse) == DAYS

        assert main(["repredict", "--since", "2026-03-02"]) == 0
        out = capsys.readouterr().out
        assert "partition 2026-03-02: re-predicted" in out and "partition 2026-03-03: re-predicted" in out
        assert "2026-03-01: re-predicted" not in out
        assert stale_keys(settings, warehouse) == ["2026-03-01"]
        resolver = get_stale_status_resolver(instance, list(assets))  # type: ignore[arg-type]
        assert resolver.get_status(dg.AssetKey("predictions"), "2026-03-01") == StaleStatus.STALE
        assert resolver.get_status(dg.AssetKey("predictions"), "2026-03-02") == StaleStatus.FRESH

    current = versions_by_partition(warehouse)
    assert current == {"2026-03-01": {"v1": inputs["2026-03-01"]}, **{d: {"v2": inputs[d]} for d in DAYS[1:]}}
    # What v1 said on the re-predicted days stays answerable.
    assert versions_by_partition(warehouse, "predictions_history") == {d: {"v1": inputs[d]} for d in DAYS[1:]}
    rows = stored_rows(
        warehouse,
        """SELECT model_version, is_current, count(*), count(DISTINCT record_id) FROM predictions_all_versions
           WHERE partition_key = '2026-03-02' GROUP BY model_version, is_current ORDER BY model_version, is_current""",
    )
    assert rows == [
        ("v1", False, inputs["2026-03-02"], inputs["2026-03-02"]),
        ("v2", True, *[inputs["2026-03-02"]] * 2),
    ]

    assert main(["repredict"]) == 0
    assert "partition 2026-03-01: re-predicted" in capsys.readouterr().out
    assert stale_keys(settings, warehouse) == []
    assert main(["repredict"]) == 0
    assert "no stale partitions" in capsys.readouterr().out


@BOTH_BACKENDS
def test_rolling_back_restores_current_rows_from_the_same_version_once(
    settings: Settings, landing: Path, registry: Registry, warehouse: Warehouse
) -> None:
    day = DAYS[0]
    assert run_assets(settings, ["inputs", "predictions"], day).success
    train_demo_model(registry, "champion", seed=1)
    assert run_assets(settings, ["predictions"], day).success
    registry.set_alias("champion", "v1")
    assert run_assets(settings, ["predictions"], day).success
    n = next(iter(versions_by_partition(warehouse)[day].values()))
    assert versions_by_partition(warehouse) == {day: {"v1": n}}
    assert versions_by_partition(warehouse, "predictions_history") == {day: {"v2": n}}
    train_demo_model(registry, "champion", seed=2)  # v3: v1 joins v2 in history, each record once per version
    assert run_assets(settings, ["predictions"], day).success
    assert versions_by_partition(warehouse) == {day: {"v3": n}}
    assert versions_by_partition(warehouse, "predictions_history") == {day: {"v1": n, "v2": n}}
    [(rows, distinct)] = stored_rows(
        warehouse, "SELECT count(*), count(DISTINCT (record_id, model_version)) FROM predictions_all_versions"
    )
    assert rows == distinct == 3 * n


@BOTH_BACKENDS
def test_history_takes_the_classes_of_earlier_models(
    settings: Settings, landing: Path, registry: Registry, warehouse: Warehouse
) -> None:
    """A warehouse whose predictions carry a probability column no current model has still archives."""
    day = DAYS[0]
    assert run_assets(settings, ["inputs", "predictions"], day).success
    # History made from predictions before the retired class's column was added: it lacks that column.
    change_stored_rows(
        warehouse,
        "DROP VIEW predictions_all_versions",
        "DROP TABLE predictions_history",
        "CREATE TABLE predictions_history AS SELECT * FROM predictions LIMIT 0",
        "ALTER TABLE predictions_history ADD COLUMN superseded_at TIMESTAMPTZ",
        "ALTER TABLE predictions_history ADD COLUMN superseded_by_run VARCHAR",
        "ALTER TABLE predictions ADD COLUMN proba_retired_class DOUBLE PRECISION",
    )
    train_demo_model(registry, "champion", seed=1)
    assert run_assets(settings, ["predictions"], day).success
    n = next(iter(versions_by_partition(warehouse)[day].values()))
    assert versions_by_partition(warehouse, "predictions_history") == {day: {"v1": n}}


@pytest.mark.parametrize(("policy", "expected"), [("current", ["v2", "v2"]), ("point_in_time", ["v1", "v2"])])
@BOTH_BACKENDS
def test_backfill_uses_the_current_or_the_then_champion(
    make_settings: Callable[..., Settings], policy: str, expected: list[str]
) -> None:
    settings = make_settings(backfill_model=policy)
    write_landing(settings.landing, FIRST_DAY, 2, 200, seed=7, files_per_day=1)
    registry = Registry(settings.models)
    january, february = datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC)
    train_demo_model(registry, "champion", trained_at=january)  # v1, promoted now: rewrite its history
    registry.root.joinpath("aliases", "champion.json").unlink()
    registry.set_alias("champion", "v1", at=datetime(2026, 2, 1, tzinfo=UTC))
    train_demo_model(registry, "challenger", seed=1, trained_at=february)  # v2
    registry.set_alias("champion", "v2", at=datetime(2026, 3, 2, 12, tzinfo=UTC))  # during 2026-03-02
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    for day in DAYS[:2]:
        assert run_assets(settings, ["inputs", "predictions"], day).success
    made = versions_by_partition(warehouse)
    assert [list(made[day]) for day in DAYS[:2]] == [[v] for v in expected]
    assert stale_keys(settings, warehouse) == []


def test_point_in_time_refuses_a_partition_older_than_the_alias_history(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(backfill_model="point_in_time")
    write_landing(settings.landing, FIRST_DAY, 1, 100, seed=7, files_per_day=1)
    train_demo_model(Registry(settings.models), "champion")  # promoted now, after the partition ended
    result = run_assets(settings, ["inputs", "predictions"], DAYS[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "pointed at no version" in message and "BATCH_PREDICT_BACKFILL_MODEL=current" in message


@BOTH_BACKENDS
def test_sensors_follow_the_champion(settings: Settings, landing: Path, registry: Registry) -> None:
    defs = build_definitions(settings)
    resources = build_resources(settings)
    champion_sensor = defs.resolve_sensor_def("champion_sensor")
    stale_sensor = defs.resolve_sensor_def("stale_predictions_sensor")
    with dg.instance_for_test() as instance:

        def evaluate(sensor: dg.SensorDefinition, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
            result = sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
            assert isinstance(result, dg.SensorResult | dg.SkipReason)
            return result

        first = evaluate(champion_sensor)  # the model asset was never materialized
        assert isinstance(first, dg.SensorResult)
        assert [r.tags["batch_predict/model_version"] for r in first.run_requests] == ["v1"]
        waiting = evaluate(champion_sensor, first.cursor)  # requested, not yet materialized: no second request
        assert isinstance(waiting, dg.SkipReason)
        assert champion_sensor.job_name == "model_job"
        assert run_model_job(settings, instance=instance, tags=first.run_requests[0].tags).success
        assert isinstance(evaluate(champion_sensor), dg.SkipReason)
        for day in DAYS[:2]:
            assert run_assets(settings, ["inputs", "predictions"], day, instance=instance).success
        calm = evaluate(stale_sensor)
        assert isinstance(calm, dg.SensorResult) and not calm.run_requests

        train_demo_model(registry, "champion", seed=1)
        moved = evaluate(champion_sensor)
        assert isinstance(moved, dg.SensorResult)
        assert [r.tags["batch_predict/model_version"] for r in moved.run_requests] == ["v2"]
        requested = run_model_job(settings, instance=instance, tags=moved.run_requests[0].tags)
        assert [m.metadata["model_version"].value for m in recorded_models(requested)] == ["v2"]
        assert isinstance(evaluate(champion_sensor, moved.cursor), dg.SkipReason)
        stale = evaluate(stale_sensor, calm.cursor)
        assert isinstance(stale, dg.SensorResult)
        assert [(r.partition_key, r.tags["batch_predict/repredict_with"]) for r in stale.run_requests] == [
            (DAYS[0], "v2"),
            (DAYS[1], "v2"),
        ]
        # Back to v1 and forward to v2 again: the same partitions get new run keys.
        registry.set_alias("champion", "v1")
        back = evaluate(stale_sensor, stale.cursor)
        assert isinstance(back, dg.SensorResult) and not back.run_requests
        registry.set_alias("champion", "v2")
        again = evaluate(stale_sensor, back.cursor)
        assert isinstance(again, dg.SensorResult)
        assert {r.partition_key for r in again.run_requests} == set(DAYS[:2])
        assert not {r.run_key for r in again.run_requests} & {r.run_key for r in stale.run_requests}


def test_sensors_skip_while_there_is_no_model(settings: Settings) -> None:
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=build_resources(settings))
        assert isinstance(defs.resolve_sensor_def("champion_sensor")(context), dg.SkipReason)


def test_point_in_time_reads_the_alias_history_at_the_partition_end(registry: Registry) -> None:
    train_demo_model(registry, "challenger", seed=1)  # v2
    history = registry.alias_history("champion")
    promoted_v1 = datetime.fromisoformat(str(history[-1]["at"]))
    time.sleep(0.01)
    boundary = datetime.now(UTC)
    registry.set_alias("champion", "v2", at=boundary)
    assert registry.version_at("champion", promoted_v1 - timedelta(seconds=1)) is None
    assert registry.version_at("champion", promoted_v1) == "v1"
    assert registry.version_at("champion", boundary - timedelta(microseconds=1)) == "v1"
    # A promotion exactly at a partition's end counts: the scheduled run after that end used it.
    assert registry.version_at("champion", boundary) == "v2"
    with pytest.raises(ModelError, match="cannot be recorded before that"):
        registry.set_alias("champion", "v1", at=boundary - timedelta(days=1))
    with pytest.raises(ModelError, match="in the future"):
        registry.set_alias("champion", "v1", at=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(ModelError, match="cannot have been promoted before that"):
        registry.set_alias("another", "v2", at=datetime.now(UTC) - timedelta(days=1))


def test_point_in_time_and_carry_over_do_not_mix(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="carry_over"):
        make_settings(backfill_model="point_in_time", on_failure="carry_over")


def test_a_promotion_decided_against_one_champion_does_not_overwrite_another(registry: Registry) -> None:
    train_demo_model(registry, "challenger", seed=1)  # v2
    train_demo_model(registry, "manual", seed=2)  # v3
    registry.set_alias("champion", "v3")  # someone promotes v3 while v2 is being compared with v1
    with pytest.raises(ModelError, match="moved to v3 while v2 was compared with v1"):
        registry.set_alias("champion", "v2", expected="v1")
    assert registry.resolve("champion") == "v3"


def test_the_model_asset_materializes_only_when_the_model_changes(settings: Settings, registry: Registry) -> None:
    """So its freshness policy measures the time since the model arrived, not since it was last loaded."""
    with dg.instance_for_test() as instance:
        first = run_model_job(settings, instance=instance)
        assert [m.metadata["model_version"].value for m in recorded_models(first)] == ["v1"]
        recorded = instance.get_latest_materialization_event(dg.AssetKey("model"))
        assert recorded is not None
        again = run_model_job(settings, instance=instance)
        assert again.success and recorded_models(again) == []
        latest = instance.get_latest_materialization_event(dg.AssetKey("model"))
        assert latest is not None and latest.timestamp == recorded.timestamp
        train_demo_model(registry, "champion", seed=1)
        moved = run_model_job(settings, instance=instance)
        assert [m.metadata["model_version"].value for m in recorded_models(moved)] == ["v2"]
    policy = build_definitions(settings).resolve_asset_graph().get(dg.AssetKey("model")).freshness_policy
    windows = (getattr(policy, "warn_window", None), getattr(policy, "fail_window", None))
    assert [window.days if window else None for window in windows] == [30, 90]  # MAX_AGE, HARD_MAX_AGE


@BOTH_BACKENDS
def test_a_run_of_the_whole_graph_predicts_with_an_unchanged_champion(
    settings: Settings, landing: Path, registry: Registry, warehouse: Warehouse
) -> None:
    """Materialize all must predict even when the model did not change, and leave the model's freshness alone."""
    day = DAYS[0]
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assets = defs.assets
    assert assets is not None
    # What *Materialize all* of the prediction graph selects: its executable assets.
    everything = [key for key in graph.get_all_asset_keys() if graph.get(key).group_name == GROUP]
    executable = [key for key in everything if graph.get(key).is_executable]
    assert {key.to_user_string() for key in everything} == {"inputs", "model", "predictions"}
    assert {key.to_user_string() for key in executable} == {"inputs", "predictions"}
    with dg.instance_for_test() as instance:
        assert run_model_job(settings, instance=instance).success
        before = instance.get_latest_materialization_event(dg.AssetKey("model"))
        assert before is not None
        # Naming the model in a run fails before any run starts: never a green run with predictions skipped.
        job = defs.resolve_implicit_global_asset_job_def()
        with pytest.raises(dg.DagsterInvalidDefinitionError, match="executable asset keys.*model"):
            job.execute_in_process(asset_selection=everything, partition_key=day, instance=instance)
        assert len(instance.get_runs()) == 1  # only the model_job run

        result = job.execute_in_process(asset_selection=executable, partition_key=day, instance=instance)
        assert result.success
        assert [e.step_key for e in result.all_events if e.is_step_skipped] == []
        assert [m.partition for m in result.asset_materializations_for_node("predictions")] == [day]
        checks = {e.check_name for e in result.get_asset_check_evaluations()}
        assert {"every_input_predicted", "no_prediction_errors"} <= checks
        # The model was not recorded again, so its freshness still counts from when it arrived.
        after = instance.get_latest_materialization_event(dg.AssetKey("model"))
        assert after is not None and after.timestamp == before.timestamp and after.run_id == before.run_id
        resolver = get_stale_status_resolver(instance, list(assets))  # type: ignore[arg-type]
        assert resolver.get_status(dg.AssetKey("predictions"), day) == StaleStatus.FRESH
    [(valid,)] = stored_rows(warehouse, "SELECT count(*) FROM inputs WHERE partition_key = $p", p=day)
    assert valid > 0 and versions_by_partition(warehouse) == {day: {"v1": valid}}
