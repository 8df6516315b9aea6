"""What every text data module shares: tokenizer limits, batch sizes, training order, loaders.

:class:`BatchedTextDataModule` holds the settings that the labeled-task module
(:class:`~distill.data.datamodule.TextClassificationDataModule`) and the pre-training corpus module
(:class:`~distill.data.mlm.TextCorpusDataModule`) have in common, checks them (each problem names
its ``data.`` field and the allowed values), picks the training order and builds the loaders.

Preparing is two steps: :meth:`~BatchedTextDataModule.check` reads the data and checks it against
the config (no tokenizing), so a run can report the data's problems together with the config's and
the models' before any work is done; :meth:`~BatchedTextDataModule.prepare` then tokenizes.
"""

from __future__ import annotations

import itertools
import logging

from collections.abc import Callable, Sized
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from distill.data.errors import DataConfigError
from distill.data.resumable import BatchTransform, ResumableLoader
from distill.data.sampling import LengthGroupedSampler, RankShardedSampler, TransferMixSampler

log = logging.getLogger(__name__)

# Tokenizers without a known limit report this sentinel (transformers' VERY_LARGE_INTEGER).
NO_MODEL_MAX_LENGTH = int(1e20)


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


class BatchedTextDataModule(L.LightningDataModule):
    """Base of the text data modules: batching settings, their checks, the training order, loaders.

    Subclasses implement :meth:`_read_and_check` (load the raw data, return every problem, no
    tokenizing) and :meth:`_build` (tokenize what was read: fill ``train_dataset`` / ``eval_dataset``
    and ``train_lengths``, the token count per training example), and call
    :meth:`_batching_problems` among their checks.

    Args:
        tokenizer: the models' tokenizer.
        max_length: tokens per example, special tokens included (at most the tokenizer's limit).
        batch_size: training examples per batch.
        eval_batch_size: evaluation examples per batch.
        train_limit / eval_limit: keep only the first N examples of a split (``None``: all).
        group_by_length: batch training examples of similar length (less padding).
        shuffle: shuffle the training examples (``False``: file order).
        seed: seed of the training order.
        num_workers: ``DataLoader`` worker processes.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        batch_size: int,
        eval_batch_size: int,
        train_limit: int | None,
        eval_limit: int | None,
        group_by_length: bool,
        shuffle: bool,
        seed: int,
        num_workers: int,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.train_limit = train_limit
        self.eval_limit = eval_limit
        self.group_by_length = group_by_length
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.train_lengths: list[int] = []
        self._problems: list[str] | None = None  # set by check()
        self._prepared = False
        self._train_loader: ResumableLoader | None = None  # the last training loader made
        self._loader_state: dict[str, int] | None = None  # from a checkpoint, for the next one

    def state_dict(self) -> dict[str, Any]:
        """Lightning hook (saved in every checkpoint): where the training loader stands.

        Through the data module, not only through Lightning's own stateful-loader support
        (``FitLoop._load_combined_loader_states``): Lightning hands that state back only if it
        builds the training loader after reading the checkpoint's loop state, but a run whose
        scheduler reads ``trainer.estimated_stepping_batches`` has the loader built earlier, in
        ``configure_optimizers``, and the state is then silently dropped. The data module's state
        is restored first (``restore_datamodule``), before any loader exists.
        """
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning hook: the next training loader continues where the checkpoint's stopped."""
        self._loader_state = state_dict.get("train_loader")

    def check(self) -> list[str]:
        """Reads the data and checks it against the config, without tokenizing. Idempotent.

        Returns:
            Every problem found (empty when the data fits), each naming its ``data.`` field, the
            value, what the data allows and the fix.
        """
        if self._problems is None:
            self._problems = self._read_and_check()
        return self._problems

    def prepare(self):
        """Checks (:meth:`check`) and tokenizes the data. Idempotent.

        Returns:
            ``self``, prepared.

        Raises:
            DataConfigError: listing every problem :meth:`check` found.
        """
        if self._prepared:
            return self
        problems = self.check()
        if problems:
            raise DataConfigError(problems)
        self._build()
        self._prepared = True
        return self

    def setup(self, stage: str | None = None) -> None:
        """Lightning hook: prepares the data unless :meth:`prepare` already ran."""
        self.prepare()

    def _read_and_check(self) -> list[str]:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def _report_truncation(self, split: str, lengths: list[int]) -> None:
        """One warning when ``max_length`` cut examples of a split (they reach it exactly): texts far
        over it lose their end silently otherwise."""
        cut = sum(1 for length in lengths if length >= self.max_length)
        if cut:
            log.warning(
                "data.max_length=%d truncated %d of %d %s examples (%.1f%%); raise data.max_length (up to "
                "the tokenizer's model_max_length) to keep more of their text",
                self.max_length, cut, len(lengths), split, 100.0 * cut / max(len(lengths), 1),
            )

    def _batching_problems(self) -> list[str]:
        """Problems with the shared settings, each naming its ``data.`` field and the allowed values."""
        problems = []
        for name in ("max_length", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                problems.append(f"data.{name}={value!r} is invalid: use an integer >= 1.")
        model_max = getattr(self.tokenizer, "model_max_length", None)
        known_limit = is_int(model_max) and model_max < NO_MODEL_MAX_LENGTH
        if known_limit and is_int(self.max_length) and self.max_length > model_max:
            problems.append(
                f"data.max_length={self.max_length} exceeds the tokenizer's model_max_length="
                f"{model_max} (the model has no positions beyond it). Fix: set data.max_length<={model_max}."
            )
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                problems.append(f"data.{name}={value!r} is invalid: use an integer >= 1, or null for all examples.")
        if not is_int(self.num_workers) or self.num_workers < 0:
            problems.append(f"data.num_workers={self.num_workers!r} is invalid: use an integer >= 0.")
        return problems

    def calibration_batches(self, count: int) -> list[dict[str, torch.Tensor]]:
        """The first ``count`` training batches, in the training order: what a compression method
        (pruning importance, GPTQ, Wanda) calibrates on. Subclasses with a transfer set leave it out."""
        return list(itertools.islice(self.train_dataloader(), count))

    def _train_sampler(self, dataset: Sized, seed: int, sharded: bool = True) -> Sampler[int]:
        """Length-grouped shuffle, plain shuffle, or file order (``shuffle=False``), seeded by ``seed``.

        Each shards itself across DDP ranks in whole batches (``distill.data.sampling``), so
        Lightning leaves it alone and every rank's batches stay length-grouped. ``sharded=False``
        gives the whole order to this process even inside a DDP run (a one-device loop).
        """
        world = {} if sharded else {"num_replicas": 1, "rank": 0}
        if self.shuffle and self.group_by_length:
            return LengthGroupedSampler(self.train_lengths, self.batch_size, seed=seed, **world)
        return RankShardedSampler(len(dataset), self.batch_size, seed=seed, shuffle=self.shuffle, **world)

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: Sampler[int],
        collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        batch_transform: BatchTransform | None = None,
    ) -> DataLoader:
        """A training sampler (:mod:`distill.data.sampling`) gets a :class:`ResumableLoader`, which a
        run stopped mid-epoch continues exactly; evaluation samplers a plain ``DataLoader``. Both draw
        the workers' base seed from their own generator, so iterating a loader never advances the
        global torch RNG that dropout draws from (a resumed run restores that RNG's state)."""
        common = {
            "collate_fn": collate,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        if isinstance(sampler, RankShardedSampler | TransferMixSampler):
            loader = ResumableLoader(dataset, batch_size, sampler, seed=sampler.seed, batch_transform=batch_transform, **common)
            if self._loader_state is not None:
                loader.load_state_dict(self._loader_state)
                self._loader_state = None
            self._train_loader = loader
            return loader
        if batch_transform is not None:
            raise ValueError("batch_transform needs a training sampler from distill.data.sampling")
        generator = torch.Generator().manual_seed(int(self.seed) if is_int(self.seed) else 0)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **common)


__all__ = ["NO_MODEL_MAX_LENGTH", "BatchedTextDataModule", "is_int"]
