"""Teacher-output cache: the frozen teacher runs once per data set, every epoch and every run of a
sweep read its outputs from disk (see docs/performance.md).

- :mod:`~distill.teacher_cache.identity`: what a cache was computed from (weights and token hashes).
- :mod:`~distill.teacher_cache.store`: the folder on disk, written atomically under a lock, read memory-mapped.
- :mod:`~distill.teacher_cache.build`: the teacher's one pass over a split.
- :mod:`~distill.teacher_cache.run`: a run's settings (``teacher_cache.*``, ``stage``), checks and lookup.
"""

from distill.teacher_cache.identity import CacheIdentity, tokens_sha256, weights_sha256
from distill.teacher_cache.store import STORE_DTYPES, IncompleteCache, TeacherOutputCache, build_atomically, open_cache

__all__ = [
    "STORE_DTYPES",
    "CacheIdentity",
    "IncompleteCache",
    "TeacherOutputCache",
    "build_atomically",
    "open_cache",
    "tokens_sha256",
    "weights_sha256",
]
