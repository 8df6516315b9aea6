"""How the teacher decodes in sequence-level KD's generation stage: :class:`GenerationSettings`.

Kim & Rush (2016, arXiv:1606.07947) train the student on the teacher's *mode*, approximated by
beam search (their beam size: 5), hence the defaults ``strategy="beam"``, ``num_beams=5``. Greedy
decoding (``num_beams=1``) is the cheap approximation; sampling gives targets from the teacher's
distribution rather than its mode.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

#: ``strategy`` values: what ``model.generate`` is asked to do.
STRATEGIES = ("beam", "greedy", "sample")
#: ``truncation_side`` values: which end of a too-long prompt is cut.
TRUNCATION_SIDES = ("left", "right")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GenerationSettings:
    """How the teacher generates, how prompts are cut, and how the output is sharded.

    Every field is recorded in the output folder's manifest; resuming into a folder with any
    other value is refused (the rows would come from two different decoders).

    Attributes:
        strategy: ``"beam"`` (beam search, the approximate mode as in Kim & Rush 2016),
            ``"greedy"`` (argmax at every step) or ``"sample"`` (ancestral sampling with
            ``temperature`` / ``top_p`` / ``top_k``).
        num_beams: beams kept by ``"beam"`` (at least 2); unused by the other strategies.
        temperature: ``"sample"``: logits are divided by it before the softmax (> 0).
        top_p: ``"sample"``: nucleus sampling, keep the smallest set of tokens whose probability
            reaches ``top_p`` (in (0, 1]; 1 keeps all).
        top_k: ``"sample"``: keep the ``top_k`` most likely tokens (0 keeps all). Passed
            explicitly, so the model's own ``generation_config`` (transformers defaults to 50) does
            not apply.
        max_new_tokens: the most tokens generated after each prompt (generation stops earlier at
            the end-of-sequence token).
        seed: sampling seed; shard ``i`` is generated after seeding torch from ``(seed, i)`` (see
            :func:`shard_seed`), so a resumed run writes the same rows as an uninterrupted one.
        batch_size: prompts per ``model.generate`` call. Part of the identity: it decides which
            random numbers each prompt gets when sampling, and padding changes float rounding.
        shard_size: prompts per shard on disk: shard ``i`` holds prompts
            ``[i * shard_size, (i + 1) * shard_size)``. A killed run loses at most one shard.
        max_prompt_length: the most prompt tokens fed to the model, the tokenizer's special
            tokens included; ``None`` keeps whole prompts.
        truncation_side: which text tokens a longer prompt loses. ``"left"`` (default) drops its
            start and keeps the end, the text the completion continues; ``"right"`` is plain
            truncation, keeping the start. Either way the tokenizer truncates the text, then adds
            its special tokens (BOS / ``[CLS]`` ... ``[SEP]``), which are kept.
    """

    strategy: str = "beam"
    num_beams: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 8
    shard_size: int = 1000
    max_prompt_length: int | None = 512
    truncation_side: str = "left"

    def problems(self, field_prefix: str = "generate") -> list[str]:
        """Every bad value, one message each, naming ``<field_prefix>.<field>``, the value and
        what is allowed; empty when the settings are usable."""

        def bad(name: str, allowed: str) -> str:
            return f"{field_prefix}.{name}={getattr(self, name)!r} {allowed}"

        found = []
        if self.strategy not in STRATEGIES:
            found.append(bad("strategy", f"is not one of {sorted(STRATEGIES)}"))
        if not _is_int(self.num_beams) or self.num_beams < 1:
            found.append(bad("num_beams", "must be an integer >= 1 (>= 2 for strategy='beam')"))
        elif self.strategy == "beam" and self.num_beams < 2:
            found.append(bad("num_beams", "must be >= 2 for strategy='beam' (1 beam is strategy='greedy')"))
        if not _is_number(self.temperature) or self.temperature <= 0:
            found.append(bad("temperature", "must be a finite number > 0"))
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            found.append(bad("top_p", "must be a number in (0, 1] (1 keeps every token)"))
        if not _is_int(self.top_k) or self.top_k < 0:
            found.append(bad("top_k", "must be an integer >= 0 (0 keeps every token)"))
        for name in ("max_new_tokens", "batch_size", "shard_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                found.append(bad(name, "must be an integer >= 1"))
        if not _is_int(self.seed) or self.seed < 0:
            found.append(bad("seed", "must be an integer >= 0"))
        if self.max_prompt_length is not None and (not _is_int(self.max_prompt_length) or self.max_prompt_length < 1):
            found.append(bad("max_prompt_length", "must be an integer >= 1, or None to keep whole prompts"))
        if self.truncation_side not in TRUNCATION_SIDES:
            found.append(bad("truncation_side", f"is not one of {sorted(TRUNCATION_SIDES)}"))
        return found

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (what the manifest records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationSettings:
        """Settings from :meth:`to_dict`'s output (unknown keys are an error)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``model.generate`` for this strategy (one sequence per prompt)."""
        common = {"max_new_tokens": self.max_new_tokens, "num_return_sequences": 1}
        if self.strategy == "greedy":
            return {**common, "do_sample": False, "num_beams": 1}
        if self.strategy == "beam":
            return {**common, "do_sample": False, "num_beams": self.num_beams}
        return {
            **common,
            "do_sample": True,
            "num_beams": 1,
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "top_k": self.top_k,
        }


def shard_seed(seed: int, shard_index: int) -> int:
    """The torch seed of shard ``shard_index``: a SHA-256 of ``(seed, shard_index)``, cut to 63 bits.

    Distinct pairs give unrelated seeds (``seed + shard_index`` would make seed 1's shard 0 equal
    seed 0's shard 1).
    """
    digest = hashlib.sha256(f"distill.generation:{seed}:{shard_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
