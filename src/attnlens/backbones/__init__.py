"""Frozen pretrained transformers that load offline."""
