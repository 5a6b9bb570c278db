"""ONNX classifiers run with onnxruntime, behind the same `predict_proba`/`classes_` face as scikit-learn.

An ONNX file carries neither feature names nor, often, readable class labels: a
converted iris SVC takes one float tensor `[N, 4]` and answers class indices 0, 1, 2.
So both are given at registration (`--features`, `--classes`) and stored in the
registry's metadata. The model may take

- one 2-D tensor whose columns are the features in the given order, or
- one input per feature, named like the features (`[N]` or `[N, 1]` each),

and must answer class probabilities, either as a 2-D tensor or as a ZipMap (a
sequence of {label: probability}), which is what skl2onnx writes by default.
Class labels found in the graph (`classlabels_strings` / `classlabels_int64s` of the
classifier node) fix the column order; `--classes` names them when they are integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from batch_predict.models.types import ModelError

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


class OnnxClassifier:
    """A classifier backed by an onnxruntime session, with `classes_` and `predict_proba(frame)`."""

    def __init__(self, path: Path, features: Sequence[str], classes: Sequence[str] | None = None) -> None:
        self.path = path
        self.features = list(features)
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnx and onnxruntime raise their own exception types
            raise ModelError(
                f"Cannot load {path} as an ONNX model ({type(error).__name__}: {str(error).splitlines()[0]}). "
                "Export the model with skl2onnx (or your framework's ONNX exporter) and register that file."
            ) from error
        self._feeds = self._input_plan()
        self._output, self._zipmap = self._probability_output()
        model_labels = _graph_labels(graph)
        self.classes_ = np.asarray(self._class_names(model_labels, classes), dtype=object)
        self._label_keys = model_labels

    def _input_plan(self) -> list[tuple[str, Any, list[str], bool]]:
        """How to feed the session: (input name, dtype, feature columns, keep 2-D) per input."""
        inputs = self._session.get_inputs()
        unsupported = [f"{i.name}: {i.type}" for i in inputs if i.type not in _DTYPES]
        if unsupported:
            raise ModelError(
                f"{self.path} has inputs of types this app cannot feed ({', '.join(unsupported)}); "
                "export the model with float or double inputs."
            )
        if len(inputs) == 1:
            (single,) = inputs
            width = single.shape[1] if len(single.shape) == 2 else None
            if len(single.shape) != 2 or (isinstance(width, int) and width != len(self.features)):
                raise ModelError(
                    f"{self.path} takes one input {single.name} of shape {single.shape}, but {len(self.features)} "
                    f"features were given ({', '.join(self.features)}). Give --features in the model's column order."
                )
            return [(single.name, _DTYPES[single.type], self.features, True)]
        names = [i.name for i in inputs]
        if sorted(names) != sorted(self.features):
            raise ModelError(
                f"{self.path} takes {len(inputs)} inputs ({', '.join(names)}) that are not the given features "
                f"({', '.join(self.features)}). A model with several inputs must have one per feature, named like it."
            )
        return [(i.name, _DTYPES[i.type], [i.name], len(i.shape) == 2) for i in inputs]

    def _probability_output(self) -> tuple[str, bool]:
        """The output holding class probabilities, and whether it is a ZipMap (sequence of maps)."""
        candidates = []
        for output in self._session.get_outputs():
            if output.type.startswith("seq(map("):
                candidates.append((output.name, True))
            elif output.type in _DTYPES and len(output.shape) == 2:
                candidates.append((output.name, False))
        if not candidates:
            described = ", ".join(f"{o.name}: {o.type}" for o in self._session.get_outputs())
            raise ModelError(
                f"{self.path} has no class-probability output (outputs: {described}). Export the classifier "
                "with its probabilities (skl2onnx does so for classifiers with predict_proba)."
            )
        preferred = [c for c in candidates if "prob" in c[0].lower()]
        return (preferred or candidates)[0]

    def _class_names(self, model_labels: list[Any] | None, given: Sequence[str] | None) -> list[str]:
        if model_labels is None:
            if given is None:
                raise ModelError(f"{self.path} does not name its classes: give --classes x,y,z in output order.")
            return list(given)
        if given is None:
            if all(isinstance(label, str) for label in model_labels):
                return [str(label) for label in model_labels]
            raise ModelError(
                f"{self.path} labels its classes {model_labels}: give --classes with {len(model_labels)} names, "
                "in that order (for example --classes setosa,versicolor,virginica)."
            )
        if len(given) != len(model_labels):
            raise ModelError(f"--classes {list(given)} name {len(given)} classes; {self.path} has {model_labels}.")
        if all(isinstance(label, str) for label in model_labels) and list(given) != model_labels:
            raise ModelError(f"--classes {list(given)} do not match the model's class labels {model_labels}.")
        return list(given)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        feeds = {}
        for name, dtype, columns, two_d in self._feeds:
            values = frame[columns].to_numpy(dtype=dtype)
            feeds[name] = values if two_d else values.reshape(-1)
        (result,) = self._session.run([self._output], feeds)
        if not self._zipmap:
            return np.asarray(result, dtype=np.float64)
        if not result:
            return np.empty((0, len(self.classes_)))
        keys = self._label_keys or list(result[0])
        return np.array([[row[key] for key in keys] for row in result], dtype=np.float64).reshape(len(result), -1)


def _graph_labels(graph: onnx.GraphProto) -> list[Any] | None:
    """The class labels a classifier (or ZipMap) node of the graph declares, in output order."""
    for node in graph.node:
        if node.domain != "ai.onnx.ml":
            continue
        for attribute in node.attribute:
            if attribute.name in _LABEL_ATTRIBUTES:
                value = onnx.helper.get_attribute_value(attribute)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in value]
    return None
