"""Datasets for initlab: vision (MNIST family, CIFAR) and text, held whole on the training device.

See docs/data.md. Nothing here downloads at run time; ``initlab download`` does, when asked.
"""
from __future__ import annotations

from .augment import Augment, crop_with_offsets, random_crop, random_hflip
from .batches import VisionBatches, derive_seed, vision_batches
from .locate import ENV_VAR, cache_dir, locate, search_dirs
from .subset import balanced_subset
from .text import (TEXTS, ByteTokenizer, CharTokenizer, LMBatches, check_text_available, lm_batch,
                   lm_eval_batches, load_text, shakespeare_files, split_tokens, tokenizer_from_dict)
from .vision import (DATASETS, DatasetSpec, VisionData, channel_stats, dataset_spec, load_vision,
                     read_idx)

__all__ = [
    "TEXTS", "Augment", "ByteTokenizer", "check_text_available", "CharTokenizer", "DATASETS", "DatasetSpec", "ENV_VAR", "LMBatches",
    "VisionBatches", "VisionData", "balanced_subset", "cache_dir", "channel_stats",
    "crop_with_offsets", "dataset_spec", "derive_seed", "lm_batch", "lm_eval_batches", "load_text",
    "load_vision", "locate", "random_crop", "random_hflip", "read_idx", "search_dirs",
    "shakespeare_files", "split_tokens", "tokenizer_from_dict", "vision_batches",
]
