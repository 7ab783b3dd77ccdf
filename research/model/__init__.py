"""The decoder-only transformer family (`transformer`) and its parameter/FLOP accounting (`accounting`)."""

from research.model.accounting import ModelCounts, count_model


def __getattr__(name):
    if name == "Transformer":  # imports jax/flax only when the model itself is needed
        from research.model.transformer import Transformer  # lazy: jax and flax

        return Transformer
    raise AttributeError(name)


__all__ = ["Transformer", "ModelCounts", "count_model"]
