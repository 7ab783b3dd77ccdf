"""Data stage: corpora -> tokenizer -> memory-mapped token shards -> stateless batches.

Typical use::

    from research.data import get_dataset
    ds = get_dataset("shakespeare", "bpe:4096")      # prepares on first use, then cached
    batch = ds.train_batch(step, batch_size=32, seq_len=256, seed=0)  # int32 [32, 257]
    val = ds.val_batches(batch_size=32, seq_len=256, max_tokens=2**18)
    bpb = ds.bits_per_byte(val_loss_nats_per_token)

Modules: `corpora` (corpus strings -> documents), `shakespeare`, `synthetic`,
`tokenizer`, `shards` (files + manifest), `split` (train/val by document), `build`
(stream, tokenize, write), `prepare` (key, lock, cache),
`dataset` (batching), `cli` (`scaling data ...`).
"""

from research.data.dataset import Dataset, get_dataset, load_dataset
from research.data.prepare import bits_per_byte, data_root, prepare_dataset

__all__ = ["Dataset", "get_dataset", "load_dataset", "prepare_dataset", "bits_per_byte", "data_root"]
