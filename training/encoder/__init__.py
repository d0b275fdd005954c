"""The prompt encoder: finding the pretrained model, fine-tuning methods (one registry), pooling,
a stand-alone text encoder and the frozen prompt-vector cache."""
