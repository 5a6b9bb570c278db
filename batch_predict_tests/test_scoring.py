from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_predict.registry import Registry
from batch_predict.scoring import RunInfo, predict_file, probability_column, score_batch
from batch_predict.settings import IRIS_FEATURES

RUN = RunInfo(partition_key="2026-03-01", run_id="run-1", predicted_at=datetime(2026, 3, 2, tzinfo=UTC))


def iris_batch(n: int) -> pa.RecordBatch:
    rng = np.random.default_rng(0)
    values = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4))
    return pa.record_batch(
        {"record_id": [f"r{i}" for i in range(n)], **{name: values[:, j] for j, name in enumerate(IRIS_FEATURES)}}
    )


def test_probability_column_names() -> None:
    assert probability_column("setosa") == "proba_setosa"
    assert probability_column("Iris Virginica!") == "proba_iris_virginica"
    assert probability_column("0") == "proba_0"


def test_one_output_row_per_input_with_consistent_label(registry: Registry) -> None:
    model = registry.load("champion")
    batch = iris_batch(50)
    table = score_batch(model, batch, IRIS_FEATURES, RUN)
    assert table.num_rows == 50
    assert table.column("record_id").to_pylist() == batch.column("record_id").to_pylist()
    proba = np.column_stack([table.column(probability_column(c)).to_numpy() for c in model.metadata.classes])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    expected = np.asarray(model.metadata.classes)[proba.argmax(axis=1)]
    assert table.column("prediction").to_pylist() == list(expected)
    assert set(table.column("model_version").to_pylist()) == {"v1"}
    assert set(table.column("partition_key").to_pylist()) == {"2026-03-01"}


def test_predictions_match_the_estimator(registry: Registry) -> None:
    model = registry.load("champion")
    batch = iris_batch(30)
    table = score_batch(model, batch, IRIS_FEATURES, RUN)
    direct = model.estimator.predict(batch.select(list(IRIS_FEATURES)).to_pandas())
    assert table.column("prediction").to_pylist() == list(direct)


def test_chunked_file_prediction_equals_one_batch(registry: Registry, tmp_path: Path) -> None:
    model = registry.load("champion")
    batch = iris_batch(103)
    pq.write_table(pa.Table.from_batches([batch]), tmp_path / "in.parquet")
    written = predict_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", IRIS_FEATURES, RUN, chunk_size=10)
    assert written == 103
    chunked = pq.read_table(tmp_path / "out.parquet")
    assert chunked.equals(score_batch(model, batch, IRIS_FEATURES, RUN))
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_rows == 103


def test_empty_input_gives_an_empty_file(registry: Registry, tmp_path: Path) -> None:
    model = registry.load("champion")
    pq.write_table(pa.Table.from_batches([iris_batch(0)]), tmp_path / "in.parquet")
    assert predict_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", IRIS_FEATURES, RUN, 10) == 0
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 0
