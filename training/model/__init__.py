"""The router's network: heads (one class per kind, `heads.HEADS`), `RouterNet` (what ONNX gets),
priors from the training pairs, and the seams the trainer and the export read it through.
`TransformerEmbeddingModel`, the facade above the trainer, is `training.router`."""
