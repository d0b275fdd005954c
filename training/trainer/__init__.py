"""The training loop: pairs as arrays, batches and sampling, losses, optimisers and schedules,
checkpoints that resume bit-identically."""
