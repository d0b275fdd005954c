"""The encoder an `EncoderSpec` names, of either kind: one call for every place that builds one."""

from __future__ import annotations

from training.encoder.pretrained import EncoderRef, resolve_encoder
from training.encoder.static_distill import resolve_static
from training.specs import EncoderSpec


def encoder_ref(spec: EncoderSpec) -> EncoderRef:
    """A transformer found by `resolve_encoder`, or a static table (`resolve_static`, which
    distils it from the transformer `spec.name` on first use)."""
    if spec.kind == "static":
        return resolve_static(spec.name, spec.static_dims)
    return resolve_encoder(spec.name)
