"""Benchmark of the training step: `scaling bench CONFIG.toml` (see `research.bench.run`)."""
