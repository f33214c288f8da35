"""The embedding store: a corpus's vectors as shards of ``.npy`` files, written once, read as memmaps.

It is the embedding cache and the unit of scale-out at once: a shard is named by what produces its
vectors (the model's fingerprint, the side, the dtype) and the digest of its texts, so a shard already
on disk and verified is never encoded again, whichever run, rank or process wrote it. Encoding splits
the shards across ranks, search runs over each rank's shards and merges the top-k lists exactly.
"""

from .layout import EmbeddingStore, Shard

__all__ = ["EmbeddingStore", "Shard"]
