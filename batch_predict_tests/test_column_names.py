"""Any column name a data engineer has: features, id, time and label columns with slashes, spaces, quotes,
dots, parameter markers, unicode and SQL keywords, end to end on both warehouse backends."""

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from batch_predict.cli import main
from batch_predict.contract import FeatureContract, probability_column
from batch_predict.definitions import build_definitions
from batch_predict.drift import build_reference
from batch_predict.models.registry import Registry
from batch_predict.settings import (
    RESERVED_FEATURE_NAMES,
    RESERVED_SOURCE_NAMES,
    Settings,
    SettingsError,
    load_settings,
    quote_name,
    split_names,
)
from batch_predict.warehouse import SOURCE_FILE_COLUMN, Source, Warehouse
from batch_predict.warehouse.schema import tables
from batch_predict.warehouse.sql import parameter_names, postgres_statement, pyformat
from batch_predict_tests.conftest import BOTH_BACKENDS, run_assets, stored_rows

# The wine dataset's own feature name, and names that break unquoted SQL or `$name`/`%s` parameter rewriting.
WINE = "od280/od315_of_diluted_wines"
FEATURES = (
    WINE,
    "sepal length",
    'say "hi"',
    "it's",
    "petal.width",
    "$1",
    "$p",
    "%s",
    "%(p)s",
    "é ü 名",
    "select",
    "order",
    "a,b:c=d",
)
ID_COLUMN = "group"
TIME_COLUMN = 'select "when" $t'
LABEL_COLUMN = "order's %s label/$p"
# Labels that are no identifiers, and a plain one that keeps today's column name.
CLASSES = ("a/b", "class 1", '"x"', "é", "setosa")
FIRST = date(2026, 3, 1)
DAYS = 4
ROWS = 120
PARTITION = "2026-03-02"


def _frame(day: date, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Records of one day: each class centred elsewhere in feature space, so a linear model separates them."""
    centres = np.random.default_rng(0).normal(scale=3.0, size=(len(CLASSES), len(FEATURES)))
    rng = np.random.default_rng([seed, day.toordinal()])
    species = rng.integers(0, len(CLASSES), size=rows)
    values = centres[species] + rng.normal(size=(rows, len(FEATURES)))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    frame = pd.DataFrame(values, columns=list(FEATURES))
    frame.insert(0, ID_COLUMN, [f"{day:%Y%m%d}-{i:04d}" for i in range(rows)])
    frame.insert(1, TIME_COLUMN, [start + timedelta(seconds=60 * i) for i in range(rows)])
    return frame, np.asarray(CLASSES, dtype=object)[species]


def _write_landing_and_labels(settings: Settings) -> None:
    """Every day's records (two of them invalid: out of range, and missing a feature) and their labels."""
    for offset in range(DAYS):
        day = FIRST + timedelta(days=offset)
        frame, labels = _frame(day, ROWS, seed=7)
        frame.loc[0, "a,b:c=d"] = 1000.0
        frame.loc[1, "it's"] = None
        for folder, table in (
            (settings.landing, pa.Table.from_pandas(frame, preserve_index=False)),
            (settings.labels, pa.table({ID_COLUMN: frame[ID_COLUMN], LABEL_COLUMN: labels})),
        ):
            (folder / f"{day}").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f"{day}" / "part.parquet")


def _register_model(settings: Settings) -> Pipeline:
    """A pipeline fitted on a DataFrame with these column names (so it checks `feature_names_in_`)."""
    frame, labels = _frame(date(2025, 1, 1), 600, seed=1)
    x = frame[list(FEATURES)]
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=2000))])
    pipeline.fit(x, labels)
    assert list(pipeline.feature_names_in_) == list(FEATURES)
    registry = Registry(settings.models)
    meta = registry.register(
        pipeline,
        name="wine-like",
        trained_at=datetime(2026, 2, 1, tzinfo=UTC),
        features=[{"name": name, "dtype": "float64"} for name in FEATURES],
        metrics={"holdout_accuracy": 1.0},
        training_window={"start": None, "end": None, "source": "test"},
        reference=build_reference(x, FEATURES, pipeline.predict_proba(x), list(pipeline.classes_)).to_json(),
    )
    registry.set_alias("champion", meta.version)
    return pipeline


def _overrides() -> dict[str, str]:
    return {
        "features": ",".join(quote_name(name) for name in FEATURES),
        "nonnegative_features": "none",
        "feature_ranges": f'"a,b:c=d"=-100:100,{WINE}=:1e9',
        "id_column": ID_COLUMN,
        "time_column": TIME_COLUMN,
        "label_column": LABEL_COLUMN,
        "train_days": "2",
        "holdout_days": "1",
    }


@BOTH_BACKENDS
def test_any_column_names_end_to_end(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = _overrides()
    settings = make_settings(**overrides)
    assert settings.features == FEATURES
    assert (settings.id_column, settings.time_column, settings.label_column) == (ID_COLUMN, TIME_COLUMN, LABEL_COLUMN)
    _write_landing_and_labels(settings)
    pipeline = _register_model(settings)
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings), lock_timeout_seconds=30)

    first = run_assets(settings, ["inputs", "predictions"], PARTITION)
    assert first.success
    columns = [probability_column(label) for label in CLASSES]
    assert len({name.lower() for name in columns}) == len(CLASSES)
    assert probability_column("setosa") == "proba_setosa"
    features = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}"' for name in FEATURES)
    stored = stored_rows(
        warehouse,
        f"SELECT i.record_id, {features}, p.prediction, "
        + ", ".join(f'p."{name}"' for name in columns)
        + " FROM inputs i JOIN predictions p USING (partition_key, record_id) WHERE i.partition_key = $p "
        "ORDER BY i.record_id",
        p=PARTITION,
    )
    assert len(stored) == ROWS - 2
    frame, _ = _frame(date(2026, 3, 2), ROWS, seed=7)
    expected = frame.set_index(ID_COLUMN).loc[[row[0] for row in stored], list(FEATURES)]
    np.testing.assert_allclose(np.array([row[1 : 1 + len(FEATURES)] for row in stored]), expected.to_numpy())
    proba = pipeline.predict_proba(expected)
    by_class = dict(zip(pipeline.classes_, proba.T, strict=True))
    got = np.array([row[2 + len(FEATURES) :] for row in stored])
    np.testing.assert_allclose(got, np.column_stack([by_class[label] for label in CLASSES]), rtol=1e-6)
    assert [row[1 + len(FEATURES)] for row in stored] == list(pipeline.predict(expected))
    rejected = stored_rows(
        warehouse,
        "SELECT record_id, reason, detail FROM rejected_inputs WHERE partition_key = $p ORDER BY 1",
        p=PARTITION,
    )
    assert rejected == [
        (
            "20260302-0000",
            "out_of_range",
            "a,b:c=d = 1000.0, outside its range -100:100 (BATCH_PREDICT_FEATURE_RANGES)",
        ),
        ("20260302-0001", "missing_feature", "it's"),
    ]
    [materialization] = first.asset_materializations_for_node("predictions")
    schema = materialization.metadata["dagster/column_schema"].value
    assert {column.name for column in schema.columns} >= set(columns)
    lineage = materialization.metadata["dagster/column_lineage"].value
    assert {dep.column_name for dep in lineage.deps_by_column[columns[0]]} == set(FEATURES)
    [inputs_spec] = build_definitions(settings).resolve_assets_def("inputs").specs
    input_columns = [column.name for column in inputs_spec.metadata["dagster/column_schema"].columns]
    assert input_columns[3 : 3 + len(FEATURES)] == list(FEATURES)

    # A rerun replaces the partition: the same rows, the new run's id.
    second = run_assets(settings, ["inputs", "predictions"], PARTITION)
    assert second.success
    assert stored_rows(
        warehouse, "SELECT count(*), min(run_id), max(run_id) FROM predictions WHERE partition_key = $p", p=PARTITION
    ) == [(ROWS - 2, second.run_id, second.run_id)]
    assert stored_rows(warehouse, "SELECT count(*) FROM inputs") == [(ROWS - 2,)]
    drift = stored_rows(
        warehouse, "SELECT kind, name FROM prediction_drift WHERE partition_key = $p AND kind = 'feature'", p=PARTITION
    )
    assert {name for _, name in drift} == set(FEATURES)

    # The other days, then labels, the training set and a trained candidate.
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(settings).resolve_job_def("predictions_job")
    for offset in (0, 2, 3):
        assert job.execute_in_process(partition_key=f"{FIRST + timedelta(days=offset)}", instance=instance).success
    training = build_definitions(settings).resolve_job_def("training_job")
    trained = training.execute_in_process(instance=instance)
    assert trained.success
    quality = {row["partition_key"]: row for row in warehouse.prediction_quality()}
    assert sorted(quality) == [f"{FIRST + timedelta(days=d)}" for d in range(DAYS)]
    assert all(row["labelled"] == ROWS - 2 and row["unknown_labels"] == 0 for row in quality.values())
    assert all(row["accuracy"] > 0.9 and row["log_loss"] is not None for row in quality.values())
    training_rows = stored_rows(warehouse, f"SELECT {features}, label FROM training_set")
    assert training_rows and {row[-1] for row in training_rows} == set(CLASSES)
    candidate = Registry(settings.models).metadata("v2")
    assert candidate.feature_names == list(FEATURES)

    # status prints, from the same settings in the environment.
    paths = {key: str(getattr(settings, key)) for key in ("warehouse", "landing", "models", "labels", "staging")}
    for key, value in {**overrides, **paths, "start": f"{FIRST}"}.items():
        monkeypatch.setenv(f"BATCH_PREDICT_{key.upper()}", value)
    assert load_settings().features == FEATURES
    capsys.readouterr()
    assert main(["status"]) == 0
    output = capsys.readouterr().out
    assert PARTITION in output


@pytest.mark.parametrize(
    ("label", "column"),
    [
        ("setosa", "proba_setosa"),
        ("0", "proba_0"),
        ("high_risk", "proba_high_risk"),
        ("Iris Virginica!", "proba_iris_virginica__"),
        ("a/b", "proba_a_b__"),
        ("class 1", "proba_class_1__"),
        ('"x"', "proba_x__"),
        ("é", "proba__"),
        ("", "proba__"),
        ("_a", "proba_a__"),
        ("a__b", "proba_a_b__"),
    ],
)
def test_probability_column_names(label: str, column: str) -> None:
    name = probability_column(label)
    assert name == column if column.endswith(("setosa", "0", "risk")) else name.startswith(column)
    assert len(name.encode()) <= 63
    assert name.isascii() and name.replace("_", "").isalnum()


def test_probability_columns_never_collide() -> None:
    labels = ["a b", "a-b", "a_b", "A_B", "A", "a", "é", "è", "", " ", '"x"', "x", "x" * 100, "x" * 101, "Setosa"]
    names = [probability_column(label) for label in labels]
    assert len({name.lower() for name in names}) == len(labels)
    assert probability_column("x" * 100) != probability_column("x" * 101)


def test_a_dollar_or_percent_in_quotes_is_no_parameter() -> None:
    sql = """SELECT "$p", "%s", '$x %', i."a""$q" FROM t -- it's $z
             WHERE a = $p AND b = $q AND c LIKE '%' /* $w ' */"""
    assert parameter_names(sql) == ["p", "q"]
    assert pyformat(sql) == (
        """SELECT "$p", "%%s", '$x %%', i."a""$q" FROM t -- it's $z
             WHERE a = %(p)s AND b = %(q)s AND c LIKE '%%' /* $w ' */"""
    )
    assert postgres_statement('SELECT "%s"', None) == ('SELECT "%s"', None)
    assert postgres_statement('SELECT "%s" WHERE x = $x', {"x": 1}) == ('SELECT "%%s" WHERE x = %(x)s', {"x": 1})


def test_reserved_names_cover_the_tables_own_columns() -> None:
    contract = FeatureContract("id", "time", ("f",))
    stored_with_features = {
        column.name for table in tables(contract) if "f" in table.names() for column in table.columns
    }
    assert stored_with_features - {"f"} <= RESERVED_FEATURE_NAMES
    assert SOURCE_FILE_COLUMN in RESERVED_SOURCE_NAMES


def test_list_settings_quote_names_with_commas() -> None:
    assert split_names(' a , "b,c",  """x""" ,d e') == ("a", "b,c", '"x"', "d e")
    for name in ("a,b", '"x"', " padded ", "plain", 'say "hi"'):
        assert split_names(quote_name(name)) == (name,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"features": "x,run_id"}, "The feature 'run_id' would clash with the warehouse's own column 'run_id'"),
        ({"features": "x,Partition_Key"}, "would clash with the warehouse's own column 'partition_key'"),
        ({"features": "x,label"}, "own column 'label'"),
        ({"features": "x,raw__X"}, "The features 'x' and 'raw__X' clash"),
        ({"features": "Alpha,beta,alpha"}, "The names 'Alpha' and 'alpha' differ only in case"),
        ({"features": "a,b,a"}, "The name 'a' is given twice: use names without repeats"),
        ({"features": "a," + "é" * 32}, "is 64 bytes long; a feature name can have at most 63"),
        ({"features": 'a,"b'}, "is not closed by a quote"),
        ({"id_column": "file_row_number"}, "the column the landing reader adds"),
        ({"time_column": "file_row_number"}, "the column the landing reader adds"),
    ],
)
def test_refused_column_names(make_settings: Callable[..., Settings], overrides: dict[str, str], message: str) -> None:
    base = {"nonnegative_features": "none"}
    with pytest.raises(SettingsError) as error:
        make_settings(**{**base, **overrides})
    assert message in str(error.value)


def test_long_id_time_and_label_names_are_fine(make_settings: Callable[..., Settings]) -> None:
    """Only features become warehouse columns: the id, time and label columns are read from the files by name."""
    long = "t" * 100
    settings = make_settings(id_column=long + "i", time_column=long, label_column=long + "l")
    assert (settings.id_column, settings.time_column, settings.label_column) == (long + "i", long, long + "l")


@BOTH_BACKENDS
def test_a_63_byte_name_is_kept_whole(make_settings: Callable[..., Settings]) -> None:
    """At the limit, PostgreSQL keeps the whole name (and DuckDB is no different)."""
    name = "é" * 31 + "x"
    settings = make_settings(features=f"{name},b", nonnegative_features="none")
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings), lock_timeout_seconds=30)
    with warehouse.session() as session:
        assert name in session.columns("inputs")


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ('"a,b:c=d"=0:1', {"a,b:c=d": (0.0, 1.0)}),
        (f"{WINE}=:5, x=y=1:", {WINE: (None, 5.0), "x=y": (1.0, None)}),
        ('"""q"""=-1:1', {'"q"': (-1.0, 1.0)}),
    ],
)
def test_feature_ranges_of_any_name(
    make_settings: Callable[..., Settings], ranges: str, expected: dict[str, tuple[float | None, float | None]]
) -> None:
    features = ",".join(quote_name(name) for name in ("a,b:c=d", WINE, "x=y", '"q"'))
    settings = make_settings(features=features, nonnegative_features="none", feature_ranges=ranges)
    assert {r.feature: (r.low, r.high) for r in settings.feature_ranges} == expected


def test_a_quoted_range_name_needs_its_equals(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match="not closed by a quote before its '='"):
        make_settings(features='"a,b"', nonnegative_features="none", feature_ranges='"a,b" 0:1')


def test_an_onnx_model_registered_with_any_feature_and_class_names(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`model register --features/--classes` take the settings' quoting, so a name may hold a comma."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    settings = make_settings(features=",".join(quote_name(name) for name in FEATURES), nonnegative_features="none")
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(settings.models))
    frame, labels = _frame(date(2025, 1, 1), 300, seed=1)
    x = frame[list(FEATURES)].to_numpy(np.float32)
    classes = [f"{label}, too" for label in CLASSES]
    index = {label: i for i, label in enumerate(CLASSES)}
    fitted = LogisticRegression(max_iter=2000).fit(x, [index[label] for label in labels])
    path = tmp_path / "wine.onnx"
    onx = to_onnx(fitted, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))])
    path.write_bytes(onx.SerializeToString())
    features = ",".join(quote_name(name) for name in FEATURES)
    assert (
        main(["model", "register", str(path), "--features", features, "--classes", ",".join(map(quote_name, classes))])
        == 0
    )
    loaded = Registry(settings.models).load_version("v1")
    assert loaded.metadata.feature_names == list(FEATURES)
    assert loaded.metadata.classes == classes
    got = loaded.predict_proba(frame[list(FEATURES)].head(5))
    np.testing.assert_allclose(got, fitted.predict_proba(x[:5]), atol=1e-4)


@pytest.mark.filterwarnings("ignore:.*An input example was not provided when logging the model")
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_an_mlflow_model_trained_on_a_frame_with_any_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow loader feeds the model a frame with the features' own names (signature and feature_names_in_)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from batch_predict.models.mlflow_source import load_mlflow_model

    for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        monkeypatch.setenv(key, value)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    frame, labels = _frame(date(2025, 1, 1), 300, seed=1)
    x = frame[list(FEATURES)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, labels)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("wine", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name="wine",
                pip_requirements=["scikit-learn"],
                signature=infer_signature(x, model.predict_proba(x)),
            )
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    loaded = load_mlflow_model("models:/wine/1", FEATURES, tracking_uri=uri)
    assert loaded.metadata.feature_names == list(FEATURES)
    assert sorted(loaded.metadata.classes) == sorted(CLASSES)
    np.testing.assert_allclose(loaded.predict_proba(x.head(5)), model.predict_proba(x.head(5)))


@BOTH_BACKENDS
def test_csv_sources_with_any_column_names(make_settings: Callable[..., Settings]) -> None:
    """A CSV header quotes the names that hold a quote or a comma; the snapshot reads every column by name."""
    settings = make_settings(**_overrides())
    day = date(2026, 3, 1)
    frame, _ = _frame(day, 20, seed=3)
    frame[TIME_COLUMN] = frame[TIME_COLUMN].map(lambda moment: moment.isoformat())
    frame.loc[0, "é ü 名"] = None
    (settings.landing / "csv").mkdir(parents=True)
    frame.to_csv(settings.landing / "csv" / "part.csv", index=False)
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings), lock_timeout_seconds=30)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    stats = warehouse.snapshot_inputs(
        Source(settings.landing, "**/*.csv"), "2026-03-01", start, start + timedelta(days=1), "run-1"
    )
    assert (stats.valid_rows, stats.rejected_rows) == (19, 1)
    features = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}"' for name in FEATURES)
    stored = stored_rows(warehouse, f"SELECT record_id, {features} FROM inputs ORDER BY record_id")
    expected = frame.iloc[1:]
    assert [row[0] for row in stored] == list(expected[ID_COLUMN])
    np.testing.assert_allclose(np.array([row[1:] for row in stored]), expected[list(FEATURES)].to_numpy())
    assert stored_rows(warehouse, "SELECT reason, detail FROM rejected_inputs") == [("missing_feature", "é ü 名")]
