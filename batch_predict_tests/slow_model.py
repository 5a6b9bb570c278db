"""A classifier that stays busy on chosen batches, so that a test can stop a real run while it predicts."""

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


class SlowClassifier:
    """Predicts like `estimator`, but from its `fast_batches + 1`-th batch of more than one row on
    (in one process), writes `busy_marker` and stays busy for up to `seconds`.

    The wait is made of short sleeps, so that an interrupt reaches the run between them.
    Single-row batches (the model asset's smoke test) are never slow, and it is slow only in a
    process with SLOW_MODEL_ACTIVE=1 (the command under test, not the test registering it).
    """

    calls = 0

    def __init__(self, estimator: Any, busy_marker: Path, fast_batches: int = 0, seconds: float = 300) -> None:
        self.estimator = estimator
        self.busy_marker = str(busy_marker)
        self.fast_batches = fast_batches
        self.seconds = seconds
        self.classes_ = estimator.classes_

    def predict_proba(self, frame: Any) -> np.ndarray:
        if len(frame) > 1 and os.environ.get("SLOW_MODEL_ACTIVE") == "1":
            SlowClassifier.calls += 1
            if SlowClassifier.calls > self.fast_batches:
                Path(self.busy_marker).write_text("busy")
                deadline = time.monotonic() + self.seconds
                while time.monotonic() < deadline:
                    time.sleep(0.05)
        return np.asarray(self.estimator.predict_proba(frame))
