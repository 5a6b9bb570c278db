"""Models: the shared types, the folder registry, the ONNX runner, the MLflow source, and the one
`ModelSource` the assets use (batch_predict.models.source).

Only the types are imported here, so that importing a name rule (batch_predict.models.names)
does not load the registry, onnxruntime or MLflow.
"""

from batch_predict.models.types import LoadedModel, ModelError, ModelMetadata

__all__ = ["LoadedModel", "ModelError", "ModelMetadata"]
