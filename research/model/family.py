"""Model families: the shapes a law may compare, named the same by the recipe that plans them and
the fit that reads their results (a table with only a `layers` column gets its depth's name)."""

from __future__ import annotations


def depth_family(layers: int) -> str:
    """The family of a shape known only by its depth: "1 layer", "2 layers"."""
    layers = int(layers)
    return f"{layers} layer" + ("s" if layers != 1 else "")
