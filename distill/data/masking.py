"""DistilBERT's token masking: which tokens are selected, how they are replaced, the collator.

Masking (Devlin et al. 2019; Sanh et al. 2019, arXiv:1910.01108): ``mlm_probability`` (15%) of the
real, non-special tokens are selected for prediction; of those, ``mask_token_rate`` (80%) become
``[MASK]``, ``random_token_rate`` (10%) a random non-special token and the rest (10%) stay as they
are. Labels hold the original token at selected positions and -100 everywhere else. With
``mlm_smoothing`` :math:`s` (DistilBERT: 0.7) a token :math:`v` is selected with probability
proportional to :math:`\\max(1, n_v)^{-s}` (:math:`n_v`: its count in the training text), scaled
per batch so the expected selected share stays ``mlm_probability`` (a probability that would exceed
1 is capped at 1 and the excess spread over the other tokens). ``mlm_smoothing: 0`` selects
uniformly. ``mlm_probability: 0`` turns masking off (no labels: hidden-state-only distillation).

Split from :mod:`distill.data.mlm` (which reads and batches the text) so each file holds one concern.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info
from transformers import PreTrainedTokenizerBase

from distill.data.errors import DataConfigError

IGNORE_INDEX = -100

def token_weights(counts: torch.Tensor, smoothing: float, special_ids: Sequence[int]) -> torch.Tensor:
    """Selection weight of each vocabulary id: ``max(1, count)^-smoothing``, 0 for special tokens.

    Args:
        counts: ``(V,)`` occurrences of each token id in the training text.
        smoothing: DistilBERT's ``mlm_smoothing`` (0.7); 0 weighs every token alike.
        special_ids: ids never selected ([CLS], [SEP], [PAD], [MASK], ...).
    """
    weights = counts.double().clamp_min(1.0).pow(-float(smoothing))
    special = [index for index in special_ids if 0 <= index < len(weights)]
    weights[special] = 0.0
    return weights


def selection_probabilities(weights: torch.Tensor, rate: float) -> torch.Tensor:
    """Per-token selection probabilities ``min(1, c * w)``, with ``c`` chosen so that they sum to
    ``rate`` times the number of tokens with ``w > 0`` (the expected selected share is ``rate``).

    Tokens the proportional rule would give a probability above 1 get exactly 1 and the rest of the
    budget is spread over the others in proportion to their weights ("water filling").

    Shapes: weights ``(n,)`` >= 0; returns ``(n,)`` float64.
    """
    weights = weights.double()
    eligible = int((weights > 0).sum())
    budget = rate * eligible
    if budget <= 0 or eligible == 0:
        return torch.zeros_like(weights)
    if budget >= eligible:
        return (weights > 0).double()
    ordered, order = torch.sort(weights, descending=True)
    ordered = ordered[:eligible]
    # With the j largest saturated at 1: c_j = (budget - j) / (sum of the others); the first j whose
    # largest unsaturated token stays <= 1 is the solution.
    suffix = torch.flip(torch.cumsum(torch.flip(ordered, [0]), 0), [0])
    saturated = torch.arange(eligible, dtype=torch.float64)
    scale = (budget - saturated) / suffix
    fits = torch.nonzero(scale * ordered <= 1.0 + 1e-12)
    j = int(fits[0]) if len(fits) else eligible
    c = float(scale[j]) if j < eligible else 0.0
    probabilities = torch.zeros_like(weights)
    sorted_probabilities = torch.clamp(ordered * c, max=1.0)
    sorted_probabilities[:j] = 1.0
    probabilities[order[:eligible]] = sorted_probabilities
    return probabilities


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    weights: torch.Tensor,
    *,
    mlm_probability: float,
    mask_token_rate: float,
    random_token_rate: float,
    mask_token_id: int,
    random_ids: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DistilBERT/BERT masking of a padded batch; returns ``(masked input_ids, labels)``.

    Args:
        input_ids: ``(B, T)``.
        attention_mask: ``(B, T)``; padding (0) is never selected.
        weights: ``(V,)`` selection weight per vocabulary id (0: never selected), see :func:`token_weights`.
        mlm_probability: expected share of the eligible tokens selected for prediction.
        mask_token_rate: share of the selected tokens replaced by ``mask_token_id``.
        random_token_rate: share replaced by a token drawn uniformly from ``random_ids``; the rest is kept.
        random_ids: ``(K,)`` candidate ids for random replacement (non-special tokens).
        generator: the random stream (seeded by the caller).

    Returns:
        ``input_ids`` with the replacements, and ``labels`` ``(B, T)``: the original token at selected
        positions, -100 elsewhere.
    """
    token_weight = weights[input_ids] * attention_mask.bool()
    probabilities = selection_probabilities(token_weight.flatten(), mlm_probability).view_as(input_ids)
    selected = torch.rand(input_ids.shape, generator=generator, dtype=torch.float64) < probabilities
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < mask_token_rate)
    to_random = selected & (action >= mask_token_rate) & (action < mask_token_rate + random_token_rate)
    masked = input_ids.clone()
    masked[to_mask] = mask_token_id
    picks = torch.randint(len(random_ids), (int(to_random.sum()),), generator=generator)
    masked[to_random] = random_ids[picks].to(masked.dtype)
    return masked, labels


class MaskingCollator:
    """Pads examples (``{"input_ids": [...]}``) and, with ``mlm_probability > 0``, masks them.

    Returns ``input_ids``, ``attention_mask`` and, when masking, ``labels``. ``token_type_ids`` are
    left out unless ``token_type_ids=True`` (then all zeros): DistilBERT has no token-type
    embeddings, and single-segment text would only ever feed type 0.

    Reproducible: called as a function, masks come from one stream seeded with ``seed`` (and the
    worker id in a ``DataLoader`` worker); with ``fixed_masks=True`` (evaluation) each batch's masks
    depend only on ``seed`` and the batch's tokens, so every evaluation scores the same masked
    positions. Training uses :meth:`pad` and :meth:`mask` instead (masks per batch position, so a
    resumed run masks as the uninterrupted one did).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        weights: torch.Tensor | None = None,
        *,
        mlm_probability: float = 0.15,
        mask_token_rate: float = 0.8,
        random_token_rate: float = 0.1,
        seed: int = 0,
        fixed_masks: bool = False,
        token_type_ids: bool = False,
    ) -> None:
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.mlm_probability = float(mlm_probability)
        self.mask_token_rate = float(mask_token_rate)
        self.random_token_rate = float(random_token_rate)
        self.seed = int(seed)
        self.fixed_masks = fixed_masks
        self.token_type_ids = token_type_ids
        special = sorted(set(tokenizer.all_special_ids))
        vocab_size = len(tokenizer)
        if weights is None:
            weights = token_weights(torch.zeros(vocab_size), 0.0, special)
        self.weights = weights
        if self.mlm_probability > 0:
            if tokenizer.mask_token_id is None:
                raise DataConfigError(["data.mlm_probability > 0 needs a tokenizer with a mask token ([MASK])"])
            self.mask_token_id = int(tokenizer.mask_token_id)
            is_special = torch.zeros(vocab_size, dtype=torch.bool)
            is_special[[index for index in special if index < vocab_size]] = True
            self.random_ids = torch.nonzero(~is_special).flatten()
        self._generator = torch.Generator().manual_seed(self.seed)
        self._worker: int | None = None

    def _stream(self) -> torch.Generator:
        worker = get_worker_info()
        if worker is not None and self._worker != worker.id:  # each worker its own stream
            self._worker = worker.id
            self._generator.manual_seed(self.seed * 1000 + worker.id + 1)
        return self._generator

    def pad(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The examples padded to the longest, unmasked: ``input_ids``, ``attention_mask`` (and zero
        ``token_type_ids`` if asked). The training loader collates with this and masks with
        :meth:`mask`, so the masks depend on the batch's position, not on a stream's history."""
        lengths = [len(feature["input_ids"]) for feature in features]
        input_ids = torch.full((len(features), max(lengths)), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (feature, length) in enumerate(zip(features, lengths)):
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.token_type_ids:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return batch

    def mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch`` (from :meth:`pad`) with ``input_ids`` masked and ``labels`` added, drawing only
        from ``generator``; unchanged when ``mlm_probability`` is 0.

        :class:`~distill.data.resumable.ResumableLoader` calls this with a generator seeded by
        (seed, epoch, rank, batch index), so a run resumed mid-epoch masks its batches as the
        uninterrupted run did.
        """
        if self.mlm_probability <= 0:
            return batch
        batch = dict(batch)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"],
            batch["attention_mask"],
            self.weights,
            mlm_probability=self.mlm_probability,
            mask_token_rate=self.mask_token_rate,
            random_token_rate=self.random_token_rate,
            mask_token_id=self.mask_token_id,
            random_ids=self.random_ids,
            generator=generator,
        )
        return batch

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if self.mlm_probability <= 0:
            return batch
        if self.fixed_masks:
            seed = zlib.crc32(batch["input_ids"].numpy().tobytes(), self.seed & 0xFFFFFFFF)
            generator = torch.Generator().manual_seed(seed)
        else:
            generator = self._stream()
        return self.mask(batch, generator)


__all__ = ["IGNORE_INDEX", "MaskingCollator", "mask_tokens", "selection_probabilities", "token_weights"]
