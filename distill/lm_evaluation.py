"""Evaluating a distilled causal LM beyond perplexity: agreement and accuracy on rare and frequent tokens.

Compression hurts the rare cases first: a pruned or distilled network keeps its aggregate score while
losing disproportionately on the long tail (Hooker et al. 2020, "What do compressed deep neural
networks forget?", arXiv:1911.05248). For a language model the tail is the rare tokens, so perplexity
(dominated by frequent tokens) can hide the damage. This module therefore reports, next to perplexity,
the student's top-1 agreement with the teacher and its top-1 accuracy on the **rarest** and the **most
frequent** decile of the evaluated target tokens, ranked by their frequency in the training text.

Pure functions on models and batches (no Lightning, no Hydra):

* :func:`token_frequency_deciles` counts token ids in the training text (:class:`TokenDeciles`);
* :func:`evaluate_causal_lm` gives an :class:`LMEvaluation` (``as_dict()`` for the report);
* :func:`greedy_samples` and :func:`samples_markdown` give side-by-side greedy continuations.

Shift convention (done only in :func:`shifted_targets`): the logits at position ``t`` predict the label
at ``t + 1``; a position counts when that label is not ``-100`` (padding, prompt tokens).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.losses.base import next_token_positions

IGNORE_INDEX = -100
NUM_DECILES = 10
RARE_DECILE = 0
FREQUENT_DECILE = NUM_DECILES - 1


@dataclass(frozen=True)
class TokenDeciles:
    """How often each token id occurs in the training text: ``counts`` is a LongTensor of shape (V,)."""

    counts: torch.Tensor

    def decile_of(self, targets: torch.Tensor) -> torch.Tensor:
        """The frequency decile (0 = rarest … 9 = most frequent) of each evaluated target position.

        The deciles are over the N evaluated target *occurrences* (not over the vocabulary): the
        positions are ranked by ``(counts[target], target id, position)``, so ties in training count
        are broken by token id, then by position (exact and deterministic), and the ranking is cut
        into 10 groups of equal size as ``np.array_split`` does (the first ``N % 10`` groups hold one
        more). Decile 0 is the 10% of positions whose target tokens are rarest in the training text
        (count 0 included), decile 9 the 10% most frequent. With N < 10 some deciles are empty.
        """
        targets = torch.as_tensor(targets).reshape(-1).cpu().long()
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.counts.numel()):
            raise ValueError(f"target ids must lie in [0, {self.counts.numel()}), the counted vocabulary")
        ids = targets.numpy()
        order = np.lexsort((np.arange(ids.size), ids, self.counts.numpy()[ids]))  # last key is primary
        deciles = np.empty(ids.size, dtype=np.int64)
        for decile, ranked in enumerate(np.array_split(order, NUM_DECILES)):
            deciles[ranked] = decile
        return torch.from_numpy(deciles)


def token_frequency_deciles(train_token_ids: Iterable[Sequence[int]], vocab_size: int) -> TokenDeciles:
    """Count each token id over the training sequences (lists or tensors; ``-100`` entries are skipped)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for sequence in train_token_ids:
        ids = torch.as_tensor(sequence, dtype=torch.long).reshape(-1)
        ids = ids[ids != IGNORE_INDEX]
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"training token ids must lie in [0, {vocab_size}); got {ids.min()}..{ids.max()}")
        counts += torch.bincount(ids, minlength=vocab_size)
    return TokenDeciles(counts)


def shifted_targets(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token shift, in one place: ``(rows, targets)`` of shapes (N, V) and (N,).

    The logits at position ``t`` predict ``labels[t + 1]``; a position counts when that label is not
    ``-100`` (and, given ``attention_mask``, both positions are attended, so a left-padding position
    never predicts the first real token).
    """
    labels = labels.to(logits.device)
    if attention_mask is not None:  # only attended positions predicting attended tokens count
        mask = attention_mask.to(logits.device).bool()
        labels = labels.masked_fill(~mask, IGNORE_INDEX)
        labels[:, 1:] = labels[:, 1:].masked_fill(~mask[:, :-1], IGNORE_INDEX)
    keep = next_token_positions(labels, IGNORE_INDEX)
    return logits[:, :-1][keep], labels[:, 1:][keep]


@dataclass
class LMEvaluation:
    """Scores over all evaluated target positions (``tokens`` of them).

    * ``*_nll`` = −(1/N) Σ_t log p(y_t | y_<t), with log_softmax over the first ``vocab_size`` logits;
    * ``*_perplexity`` = exp(``*_nll``) (``inf`` where that overflows);
    * ``agreement*``: share of positions where argmax(student) == argmax(teacher) (both over the shared
      ``vocab_size`` logits), overall and on the rarest / most frequent decile (:meth:`TokenDeciles.decile_of`);
    * ``*_accuracy*``: share of positions where the model's argmax is the true next token.

    Teacher fields are None without a teacher; decile fields are None when the decile is empty (N < 10).
    """

    tokens: int
    vocab_size: int
    student_nll: float
    student_perplexity: float
    student_accuracy: float
    student_accuracy_rare_decile: float | None
    student_accuracy_frequent_decile: float | None
    teacher_nll: float | None = None
    teacher_perplexity: float | None = None
    teacher_accuracy: float | None = None
    teacher_accuracy_rare_decile: float | None = None
    teacher_accuracy_frequent_decile: float | None = None
    agreement: float | None = None
    agreement_rare_decile: float | None = None
    agreement_frequent_decile: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A flat, JSON-able dict: the field names as keys, floats/ints/None as values."""
        return asdict(self)


@contextlib.contextmanager
def _eval_mode(*models: torch.nn.Module | None) -> Iterator[None]:
    """Models in eval mode under ``torch.inference_mode``; each model's training flag restored after."""
    present = [model for model in models if model is not None]
    was_training = [model.training for model in present]
    try:
        for model in present:
            model.eval()
        with torch.inference_mode():
            yield
    finally:
        for model, training in zip(present, was_training):
            model.train(training)


def _device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    device = _device(model)
    inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask") if key in batch}
    return model(**inputs, use_cache=False).logits


def _per_position(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(targets, nll, argmax) per counted position, on CPU, over the first ``vocab_size`` logits."""
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"vocab_size={vocab_size} exceeds a model's {logits.shape[-1]} logits")
    rows, targets = shifted_targets(logits[..., :vocab_size], labels, attention_mask)
    if targets.numel() and targets.max() >= vocab_size:
        raise ValueError(f"a label id {int(targets.max())} lies outside the compared vocab_size={vocab_size}")
    rows = rows.float()
    nll = F.cross_entropy(rows, targets, reduction="none")
    return targets.cpu(), nll.double().cpu(), rows.argmax(dim=-1).cpu()


def _perplexity(nll: float) -> float:
    """exp(nll), ``inf`` where that overflows a float."""
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None


def evaluate_causal_lm(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    batches: Iterable[Mapping[str, torch.Tensor]],
    counts: TokenDeciles | torch.Tensor,
    *,
    vocab_size: int | None = None,
) -> LMEvaluation:
    """Perplexity, agreement with the teacher and accuracy, overall and on the rarest / most frequent decile.

    ``batches`` yield ``input_ids``, ``attention_mask`` and ``labels`` (B, T); labels equal input_ids
    with ``-100`` where a position does not count (padding, prompt tokens); without ``labels`` the
    input_ids under the attention mask are used. ``counts``: training-text token counts
    (:func:`token_frequency_deciles`). ``vocab_size``: compare only the first ``vocab_size`` logits of
    each model (padded vocabularies, e.g. 49,152 vs 49,216); default the smaller of the two widths.

    Per-position results (target, NLL, agreement, correctness) are kept on CPU and the deciles computed
    once at the end over all positions, so they are exact over the whole evaluation set; the means are
    per token (not per batch). Models run in eval mode under ``torch.inference_mode``.
    """
    deciles = counts if isinstance(counts, TokenDeciles) else TokenDeciles(torch.as_tensor(counts).long().cpu())
    targets_, student_nll, student_top, teacher_nll, teacher_top = [], [], [], [], []
    width = vocab_size
    with _eval_mode(student, teacher):
        for batch in batches:
            mask = batch.get("attention_mask")
            labels = batch.get("labels")
            if labels is None:
                labels = batch["input_ids"] if mask is None else batch["input_ids"].masked_fill(mask == 0, IGNORE_INDEX)
            student_logits = _logits(student, batch)
            teacher_logits = _logits(teacher, batch) if teacher is not None else None
            if width is None:
                width = student_logits.shape[-1]
                if teacher_logits is not None:
                    width = min(width, teacher_logits.shape[-1])
            targets, nll, top = _per_position(student_logits, labels, mask, width)
            del student_logits
            targets_.append(targets)
            student_nll.append(nll)
            student_top.append(top)
            if teacher_logits is not None:
                _, nll, top = _per_position(teacher_logits, labels, mask, width)
                teacher_nll.append(nll)
                teacher_top.append(top)
    if not targets_ or sum(t.numel() for t in targets_) == 0:
        raise ValueError("no target positions to evaluate: every next label is -100 (or no batches)")
    targets = torch.cat(targets_)
    decile = deciles.decile_of(targets)
    rare, frequent = decile == RARE_DECILE, decile == FREQUENT_DECILE
    nll = torch.cat(student_nll)
    correct = torch.cat(student_top) == targets
    result = LMEvaluation(
        tokens=int(targets.numel()),
        vocab_size=int(width),
        student_nll=float(nll.mean()),
        student_perplexity=_perplexity(float(nll.mean())),
        student_accuracy=_mean(correct),
        student_accuracy_rare_decile=_mean(correct[rare]),
        student_accuracy_frequent_decile=_mean(correct[frequent]),
    )
    if teacher is not None:
        nll = torch.cat(teacher_nll)
        top = torch.cat(teacher_top)
        teacher_correct, agree = top == targets, top == torch.cat(student_top)
        result.teacher_nll = float(nll.mean())
        result.teacher_perplexity = _perplexity(result.teacher_nll)
        result.teacher_accuracy = _mean(teacher_correct)
        result.teacher_accuracy_rare_decile = _mean(teacher_correct[rare])
        result.teacher_accuracy_frequent_decile = _mean(teacher_correct[frequent])
        result.agreement = _mean(agree)
        result.agreement_rare_decile = _mean(agree[rare])
        result.agreement_frequent_decile = _mean(agree[frequent])
    return result


class _FirstLogitsOnly:
    """A logits processor: scores beyond the first ``vocab_size`` (vocabulary padding) can't be chosen."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.index_fill(-1, torch.arange(self.vocab_size, scores.shape[-1], device=scores.device), -math.inf)


def greedy_samples(
    models: Mapping[str, torch.nn.Module],
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    *,
    vocab_size: int | None = None,
) -> list[dict[str, str]]:
    """Each model's greedy continuation of each prompt: ``[{"prompt": p, name: text, ...}, ...]``.

    One prompt at a time (no padding), encoded as the tokenizer does by default; greedy decoding
    (``do_sample=False``, one beam: deterministic) for at most ``max_new_tokens`` tokens, stopping at
    the model's end-of-sequence token. ``text`` is the decoding of the new tokens only, special tokens
    skipped. ``vocab_size``: never pick a token id at or beyond it (padded vocabularies).
    """
    from transformers import GenerationConfig, LogitsProcessorList

    samples = [{"prompt": prompt} for prompt in prompts]
    with _eval_mode(*models.values()):
        for name, model in models.items():
            config = GenerationConfig(
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=model.generation_config.eos_token_id,
                pad_token_id=tokenizer.pad_token_id
                if tokenizer.pad_token_id is not None
                else model.generation_config.eos_token_id,
            )
            processors = LogitsProcessorList([_FirstLogitsOnly(vocab_size)] if vocab_size is not None else [])
            for sample in samples:
                encoded = tokenizer(sample["prompt"], return_tensors="pt")
                input_ids = encoded["input_ids"].to(_device(model))
                attention_mask = encoded["attention_mask"].to(input_ids.device)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=config,
                    logits_processor=processors,
                )
                sample[name] = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    return samples


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: pipes escaped, line breaks as ``<br>``."""
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def samples_markdown(samples: Sequence[Mapping[str, str]]) -> str:
    """A markdown table for the report: one row per prompt, a column per model (in first-seen order)."""
    names: list[str] = []
    for sample in samples:
        names += [key for key in sample if key != "prompt" and key not in names]
    header = ["prompt", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sample in samples:
        lines.append("| " + " | ".join(_cell(str(sample.get(key, ""))) for key in header) + " |")
    return "\n".join(lines) + "\n"
