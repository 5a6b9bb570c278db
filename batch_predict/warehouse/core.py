"""The warehouse object the assets, checks, CLI and tests use, whatever backend stores it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batch_predict.contract import FeatureContract
from batch_predict.warehouse import schema
from batch_predict.warehouse.connection import Backend, Session, engine_connection, open_backend
from batch_predict.warehouse.landing import Landing
from batch_predict.warehouse.sql import literal


class WarehouseCore:
    """Opens sessions on the backend; the operations live in the mixins `Warehouse` combines."""

    def __init__(
        self,
        location: str | Path,
        contract: FeatureContract,
        lock_timeout_seconds: float = 300.0,
        memory_limit: str = "512MB",
        threads: int = 2,
        staging_root: Path | None = None,
    ) -> None:
        self.contract = contract
        self.lock_timeout_seconds = lock_timeout_seconds
        self.landing = Landing(contract)
        self.backend: Backend = open_backend(
            str(location),
            self._ensure_schema,
            lock_timeout_seconds,
            memory_limit,
            threads,
            staging_root,
        )
        self._staging_root = staging_root
        self._landing_engine: Any = None

    def _ensure_schema(self, session: Session) -> None:
        schema.ensure_schema(session, self.contract, self.backend.location)

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    @property
    def location(self) -> str:
        """The warehouse as messages name it: the DuckDB file, or the PostgreSQL URL without its password."""
        return self.backend.location

    @property
    def path(self) -> Path:
        """The DuckDB file (only the DuckDB backend has one)."""
        return Path(self.backend.location)

    @property
    def staging_root(self) -> Path:
        """The folder, local to this machine, holding every partition's staging folder and lock file."""
        return self._staging_root or self.backend.default_staging_root

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        with self.backend.session(read_only) as session:
            yield session

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the warehouse open between the block's sessions (see `Backend.hold`), and the landing engine
        with what it staged: for runs of many partitions."""
        try:
            with self.backend.hold():
                yield
        finally:
            if not self.backend.holding:
                self.close_landing_engine()

    def landing_engine(self) -> Any:
        """The in-process DuckDB engine that reads the landing files. It is not the warehouse's: what it
        staged outlives sessions (and a DuckDB file lock let go to another process) while the warehouse
        is held, so a run of many partitions reads the files once, and reads them outside any lock."""
        if self._landing_engine is None:
            engine = engine_connection(self.backend.memory_limit, self.backend.threads)
            # Beyond its memory limit it spills here (an in-memory engine would spill into the working folder).
            spill = self.staging_root.with_name(self.staging_root.name + ".spill")
            engine.execute(f"SET temp_directory = {literal(str(spill))}")
            self._landing_engine = engine
        return self._landing_engine

    def close_landing_engine(self) -> None:
        engine, self._landing_engine = self._landing_engine, None
        if engine is not None:
            engine.close()

    def release(self) -> None:
        """Let go of what `hold` keeps open, before work that does not need the warehouse for a while."""
        self.backend.release()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """The database connection of a session (a DuckDB or psycopg connection), for ad-hoc SQL."""
        with self.session(read_only) as session:
            yield session.con  # type: ignore[attr-defined]

    def exists(self) -> bool:
        return self.backend.exists()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read-only SQL statement (in the SQL both backends accept, `$name` parameters).

        Name every computed column (`count(*) AS n`): PostgreSQL calls each unnamed one `?column?`.
        """
        with self.session(read_only=True) as session:
            return session.records(sql, params)
