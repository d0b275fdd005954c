"""Evaluation: metrics, baselines, the evaluated dataset and its split, accuracy and routing
results, the report. numpy-only where it can be; `training.evaluate` is the command."""
