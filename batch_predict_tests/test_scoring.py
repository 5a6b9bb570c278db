from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.linear_model import LogisticRegression

from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel
from batch_predict.scoring import (
    ERROR_SCHEMA,
    RunInfo,
    model_input,
    predict_chunks,
    prediction_schema,
    probability_column,
    score_batch,
)
from batch_predict.settings import IRIS_FEATURES
from batch_predict.staging import read_table, staged_outcome, work_chunks, write_work

RUN = RunInfo(partition_key="2026-03-01", run_id="run-1", predicted_at=datetime(2026, 3, 2, tzinfo=UTC))


def iris_batch(n: int) -> pa.RecordBatch:
    rng = np.random.default_rng(0)
    values = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4))
    return pa.record_batch(
        {
            "partition_key": ["2026-03-01"] * n,
            "record_id": [f"r{i}" for i in range(n)],
            **{name: values[:, j] for j, name in enumerate(IRIS_FEATURES)},
        }
    )


def predicted(model: LoadedModel, batch: pa.RecordBatch) -> pa.Table:
    scored = score_batch(model, batch, IRIS_FEATURES, RUN)
    assert not scored.errors
    return pa.concat_tables(scored.predictions)


def test_probability_column_names() -> None:
    assert probability_column("setosa") == "proba_setosa"
    # Not a plain label: its words, then a hash of the label, so `iris_virginica` keeps `proba_iris_virginica`.
    assert (
        probability_column("Iris Virginica!") == "proba_iris_virginica__" + sha256(b"Iris Virginica!").hexdigest()[:10]
    )
    assert probability_column("iris_virginica") == "proba_iris_virginica"
    assert probability_column("0") == "proba_0"


def test_one_output_row_per_input_with_consistent_label(registry: Registry) -> None:
    model = registry.load("champion")
    batch = iris_batch(50)
    table = predicted(model, batch)
    assert table.num_rows == 50
    assert table.column("record_id").to_pylist() == batch.column("record_id").to_pylist()
    proba = np.column_stack([table.column(probability_column(c)).to_numpy() for c in model.metadata.classes])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    expected = np.asarray(model.metadata.classes)[proba.argmax(axis=1)]
    assert table.column("prediction").to_pylist() == list(expected)
    assert set(table.column("partition_key").to_pylist()) == {"2026-03-01"}
    # The model, run and time are the same for every row: the publish writes them, the staged rows do not hold them.
    assert table.schema == prediction_schema(model)


def test_predictions_match_the_estimator(registry: Registry) -> None:
    model = registry.load("champion")
    batch = iris_batch(30)
    table = predicted(model, batch)
    direct = model.estimator.predict(batch.select(list(IRIS_FEATURES)).to_pandas())
    assert table.column("prediction").to_pylist() == list(direct)


def test_a_model_fitted_on_an_array_gets_an_array_and_predicts_the_same(registry: Registry) -> None:
    named = registry.load("champion")
    batch = iris_batch(40)
    frame = batch.select(list(IRIS_FEATURES)).to_pandas()
    plain = LogisticRegression(max_iter=500).fit(frame.to_numpy(), named.estimator.predict(frame))
    model = LoadedModel(named.metadata, plain, named.path)
    given = model_input(model, batch, IRIS_FEATURES)
    assert isinstance(given, np.ndarray) and given.flags.c_contiguous
    np.testing.assert_array_equal(given, frame.to_numpy())
    assert isinstance(model_input(named, batch, IRIS_FEATURES), pd.DataFrame)  # fitted with feature names
    table = predicted(model, batch)
    assert table.column("prediction").to_pylist() == list(plain.predict(frame.to_numpy()))


def staged_work(tmp_path: Path, batch: pa.RecordBatch, chunk_size: int) -> Path:
    """The batch as a run stages its work: chunk files of `chunk_size` rows, from batches of other sizes."""
    pieces = [batch.slice(start, 7) for start in range(0, batch.num_rows, 7)]
    counts = write_work(pieces, tmp_path / "work", chunk_size, "2026-03-01")
    assert (counts.own, counts.carried) == (batch.num_rows, 0)
    return tmp_path / "work"


def test_the_work_is_cut_into_chunks_of_exactly_the_chunk_size(tmp_path: Path) -> None:
    batch = iris_batch(103)
    chunks = [read_table(path) for path in work_chunks(staged_work(tmp_path, batch, 10))]
    assert [chunk.num_rows for chunk in chunks] == [10] * 10 + [3]
    assert pa.concat_tables(chunks).equals(pa.Table.from_batches([batch]))


def test_chunked_prediction_equals_one_batch(registry: Registry, tmp_path: Path) -> None:
    model = registry.load("champion")
    batch = iris_batch(103)
    outcome = predict_chunks(model, staged_work(tmp_path, batch, 10), tmp_path / "chunks", IRIS_FEATURES, RUN)
    assert (outcome.chunks, outcome.predicted, outcome.failed, outcome.model_calls, outcome.peak_rows) == (
        11,
        103,
        0,
        11,
        10,
    )
    staged = staged_outcome(tmp_path / "chunks", prediction_schema(model), ERROR_SCHEMA, None)
    [attempt] = staged.predictions
    assert (attempt.run_id, attempt.predicted_at) == (RUN.run_id, RUN.predicted_at)
    assert attempt.rows.read_all().equals(predicted(model, batch))
    assert staged.errors.count_rows() == 0
    assert len(list((tmp_path / "chunks").glob("*.done"))) == 11


def test_staged_chunks_are_not_predicted_again(registry: Registry, tmp_path: Path) -> None:
    model = registry.load("champion")
    work = staged_work(tmp_path, iris_batch(50), 10)
    predict_chunks(model, work, tmp_path / "chunks", IRIS_FEATURES, RUN)
    (tmp_path / "chunks" / "000003.done").unlink()  # as if the run died while staging chunk 3
    later = RunInfo(partition_key="2026-03-01", run_id="run-2", predicted_at=datetime(2026, 3, 3, tzinfo=UTC))
    again = predict_chunks(model, work, tmp_path / "chunks", IRIS_FEATURES, later)
    assert (again.chunks, again.resumed, again.model_calls, again.predicted) == (5, 4, 1, 10)
    # Each attempt's chunks keep the run that predicted them.
    staged = staged_outcome(tmp_path / "chunks", prediction_schema(model), ERROR_SCHEMA, [])
    assert {(a.run_id, a.rows.read_all().num_rows) for a in staged.predictions} == {("run-1", 40), ("run-2", 10)}


def test_a_chunk_predicted_again_drops_the_errors_of_the_attempt_that_died(registry: Registry, tmp_path: Path) -> None:
    batch = iris_batch(20)
    work = staged_work(tmp_path, batch, 10)
    model, _ = poisoned(registry, {batch.column("sepal_length").to_pylist()[12]})
    predict_chunks(model, work, tmp_path / "chunks", IRIS_FEATURES, RUN)
    assert (tmp_path / "chunks" / "000001.errors.arrow").exists()
    (tmp_path / "chunks" / "000001.done").unlink()
    predict_chunks(registry.load("champion"), work, tmp_path / "chunks", IRIS_FEATURES, RUN)
    staged = staged_outcome(tmp_path / "chunks", prediction_schema(model), ERROR_SCHEMA, None)
    assert staged.errors.count_rows() == 0
    assert sum(a.rows.read_all().num_rows for a in staged.predictions) == 20


def test_empty_work_stages_nothing_and_reads_as_empty(registry: Registry, tmp_path: Path) -> None:
    model = registry.load("champion")
    counts = write_work([], tmp_path / "work", 10, "2026-03-01")
    outcome = predict_chunks(model, tmp_path / "work", tmp_path / "chunks", IRIS_FEATURES, RUN)
    assert (counts.own, outcome.predicted, outcome.failed, outcome.chunks) == (0, 0, 0, 0)
    staged = staged_outcome(tmp_path / "chunks", prediction_schema(model), ERROR_SCHEMA, [])
    assert (staged.predictions, staged.errors.count_rows()) == ([], 0)
    assert staged.work is not None and staged.work.count_rows() == 0


class PoisonedModel:
    """Raises on any chunk holding a record whose sepal_length is a poison value."""

    def __init__(self, inner: LoadedModel, poison: set[float], nan_on: frozenset[float] = frozenset()) -> None:
        self.inner = inner
        self.poison = poison
        self.nan_on = nan_on
        self.calls = 0

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        hit = set(frame["sepal_length"]) & self.poison
        if hit:
            raise ValueError(f"cannot score sepal_length {sorted(hit)}")
        proba = self.inner.predict_proba(frame)
        proba[frame["sepal_length"].isin(self.nan_on).to_numpy()] = np.nan
        return proba


def poisoned(
    registry: Registry, poison: set[float], nan_on: frozenset[float] = frozenset()
) -> tuple[LoadedModel, PoisonedModel]:
    loaded = registry.load("champion")
    fake = PoisonedModel(loaded, poison, nan_on)
    return LoadedModel(metadata=loaded.metadata, estimator=fake, path=loaded.path), fake


def test_poison_records_are_isolated_and_the_rest_predicted(registry: Registry) -> None:
    batch = iris_batch(64)
    values = batch.column("sepal_length").to_pylist()
    poison = {values[5], values[40]}
    model, fake = poisoned(registry, poison)
    scored = score_batch(model, batch, IRIS_FEATURES, RUN)
    errors = pa.concat_tables(scored.errors)
    assert sorted(errors.column("record_id").to_pylist()) == ["r40", "r5"]
    assert all("ValueError: cannot score" in e for e in errors.column("error").to_pylist())
    predictions = pa.concat_tables(scored.predictions)
    assert predictions.num_rows == 62
    assert set(predictions.column("record_id").to_pylist()).isdisjoint({"r5", "r40"})
    # Bisection: far fewer calls than one per record.
    assert fake.calls == scored.model_calls < 30


def test_invalid_probabilities_are_errors(registry: Registry) -> None:
    batch = iris_batch(10)
    model, _ = poisoned(registry, set(), nan_on=frozenset({batch.column("sepal_length").to_pylist()[3]}))
    scored = score_batch(model, batch, IRIS_FEATURES, RUN)
    [errors] = scored.errors
    assert errors.column("record_id").to_pylist() == ["r3"]
    assert "InvalidProbabilities" in errors.column("error")[0].as_py()
    assert sum(t.num_rows for t in scored.predictions) == 9


def test_a_batch_whose_probabilities_are_all_invalid_is_all_errors(registry: Registry) -> None:
    batch = iris_batch(6)
    model, _ = poisoned(registry, set(), nan_on=frozenset(batch.column("sepal_length").to_pylist()))
    scored = score_batch(model, batch, IRIS_FEATURES, RUN)
    assert sum(t.num_rows for t in scored.errors) == 6
    assert [t.num_rows for t in scored.predictions] == [0]
    assert scored.predictions[0].schema == prediction_schema(model)
