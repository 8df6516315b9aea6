"""Sequence-level knowledge distillation's generation stage (Kim & Rush 2016, arXiv:1606.07947).

The teacher decodes every prompt ``x`` into ``ŷ`` (beam search by default, the approximate mode of
its sequence distribution); the student is later trained on the ``(x, ŷ)`` pairs with plain
cross-entropy, ``-log p_student(ŷ | x)``.

- :mod:`~distill.generation.settings`: :class:`GenerationSettings` (strategy, sharding, truncation).
- :mod:`~distill.generation.generate`: :func:`generate_dataset`, the model calls.
- :mod:`~distill.generation.shards`: the folder on disk (manifest, staged shards, resume) and
  :func:`load_generations`.
"""

from distill.generation.generate import generate_dataset
from distill.generation.settings import STRATEGIES, GenerationSettings, shard_seed
from distill.generation.shards import IncompleteGenerations, load_generations

__all__ = [
    "STRATEGIES",
    "GenerationSettings",
    "IncompleteGenerations",
    "generate_dataset",
    "load_generations",
    "shard_seed",
]
