"""Training data, in the order it flows: documents -> token cache -> windows -> batches.

1. ``documents``: what the user typed (files, directories, globs) becomes
   ``.jsonl``/``.txt`` files, read as document texts with one-line errors that
   name the file and line.
2. ``token_cache``: the documents are tokenized ONCE into a flat token file
   under a key derived from the inputs, the tokenizer and the options; later
   runs memory-map it.
3. ``windows``: the token stream is cut into ``max_length + 1`` windows
   (inputs and targets shifted by one).
4. ``batches``: training windows are shuffled into resumable batches; the
   validation subset is the same every evaluation.
5. ``splits``: the training, validation and test text of a run, tied together
   for the trainer. ``corpus`` is the bundled Shakespeare; ``wikipedia`` the
   seed's Wikipedia sample.
"""

from gemma_core.data.batches import TrainBatches, fixed_validation_batches
from gemma_core.data.documents import DataOptions, ReadStats, expand_paths, iter_documents
from gemma_core.data.splits import DataSplit, PreparedData, prepare_datasets, split_holdout
from gemma_core.data.token_cache import (
                                         InMemoryDocuments,
                                         TokenShards,
                                         build_token_cache,
                                         cache_key,
                                         default_cache_dir,
                                         token_dtype,
)
from gemma_core.data.windows import TokenWindows

__all__ = [
    "DataOptions", "DataSplit", "InMemoryDocuments", "PreparedData", "ReadStats", "TokenShards",
    "TokenWindows", "TrainBatches", "build_token_cache", "cache_key", "default_cache_dir",
    "expand_paths", "fixed_validation_batches", "iter_documents", "prepare_datasets",
    "split_holdout", "token_dtype",
]
