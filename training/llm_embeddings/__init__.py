"""The LLM embedder (phase 1): comparison records -> one vector per LLM, so an LLM is a row of
data and a new one can be added without retraining (`training.add_model`)."""
