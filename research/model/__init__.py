"""The decoder-only transformer family and its parameter/FLOP accounting."""

from research.model.accounting import ModelCounts, count_model
from research.model.transformer import Transformer

__all__ = ["Transformer", "ModelCounts", "count_model"]
