"""The warehouse: every SQL statement of the application lives in this package.

`Warehouse` is what the assets, checks, CLI and tests use. It stores its tables in a
DuckDB file (the default) or a PostgreSQL database (`BATCH_PREDICT_WAREHOUSE=postgresql://...`),
behind the one seam in `connection.py`; an in-process DuckDB engine reads the landing files
(`landing.py`) whichever stores the result. The operations are grouped by responsibility:
`snapshots` (input snapshots), `ledger` (prediction publish and the ledger), `labels`
(labels, training set and realized quality), `drift_counts` and `status`; `schema` holds
the one table spec every DDL and Arrow schema comes from.
"""

from batch_predict.warehouse.connection import POSTGRES_SCHEMES, check_location, shown_warehouse
from batch_predict.warehouse.landing import DUPLICATE_DETAIL, READERS, SOURCE_FILE_COLUMN, Source
from batch_predict.warehouse.schema import PREDICTION_BASE_COLUMNS
from batch_predict.warehouse.sql import record_id_sql
from batch_predict.warehouse.status import Status
from batch_predict.warehouse.types import (
    Completeness,
    InputStats,
    LabelStats,
    PartitionCheckError,
    PredictionCounts,
    PredictionRun,
    PublishResult,
    SourceError,
    StagedOutcome,
    StagedPredictions,
    WarehouseDamaged,
    WarehouseError,
    WarehouseLockTimeout,
    WarehouseUnavailable,
    WorkSet,
)


class Warehouse(Status):
    """Inputs, rejected and unplaced inputs, predictions with their history and error ledger, labels,
    quality, drift and per-partition stats, in a DuckDB file or a PostgreSQL database."""


__all__ = [
    "DUPLICATE_DETAIL",
    "POSTGRES_SCHEMES",
    "PREDICTION_BASE_COLUMNS",
    "READERS",
    "SOURCE_FILE_COLUMN",
    "Completeness",
    "InputStats",
    "LabelStats",
    "PartitionCheckError",
    "PredictionCounts",
    "PredictionRun",
    "PublishResult",
    "Source",
    "SourceError",
    "StagedOutcome",
    "StagedPredictions",
    "Warehouse",
    "WarehouseDamaged",
    "WarehouseError",
    "WarehouseLockTimeout",
    "WarehouseUnavailable",
    "WorkSet",
    "check_location",
    "record_id_sql",
    "shown_warehouse",
]
