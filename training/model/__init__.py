"""The router model: scoring head, the network exported to ONNX, and `TransformerEmbeddingModel`."""

from training.model.router import TransformerEmbeddingModel

__all__ = ["TransformerEmbeddingModel"]
