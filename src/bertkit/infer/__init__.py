"""Inference: length-sorted batching, embeddings and fill-mask."""
