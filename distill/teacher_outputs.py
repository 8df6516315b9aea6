"""Where a :class:`~distill.module.DistillationModule`'s teacher outputs come from: one frozen
teacher (or its :mod:`distill.teacher_cache`), or several (an ensemble), always in eval mode and
under no_grad. :func:`model_outputs` runs any model once and keeps what the losses read.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.losses import LossInputs, LossMix, ModelOutputs, TopKLogits
from distill.losses.base import next_token_positions
from distill.losses.ensemble import ensemble_logits, ensemble_predictions
from distill.models.capture import capture_outputs
from distill.teacher_cache.hidden_states import place_hidden_states


def model_outputs(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    hidden_states: bool,
    capture: dict[str, list[nn.Module]] | None = None,
) -> ModelOutputs:
    """Run a transformers model once and keep the tensors the losses read.

    ``capture`` names modules (from :func:`distill.models.capture_modules`: per-layer q/k/v
    projections, ``module:<path>`` entries) whose outputs are recorded by forward hooks during this
    one call; the hooks are removed when it returns.
    """
    if not capture:
        output = model(**inputs, output_hidden_states=hidden_states)
        captured = None
    else:
        with capture_outputs(capture) as captured:
            output = model(**inputs, output_hidden_states=hidden_states)
    return ModelOutputs(
        logits=getattr(output, "logits", None),  # a base model (feature_extraction) has none
        hidden_states=output.hidden_states if hidden_states else None,
        captured=captured,
    )


class TeacherOutputs:
    """Mixin of :class:`~distill.module.DistillationModule`: the teacher side of a step.

    Reads the module's ``_teacher`` (a :class:`~distill.teachers._FrozenTeacher` or ``None``),
    ``_teachers`` (name -> frozen teacher), ``ensemble``, ``loss``, ``teacher_cache``,
    ``hidden_states_needed``, ``classification`` and ``num_labels``.
    """

    @property
    def teacher(self) -> nn.Module | None:
        """The single teacher (``None`` without one, and with several: see :attr:`teachers`)."""
        return self._teacher.model if self._teacher is not None else None

    @property
    def teachers(self) -> dict[str, nn.Module]:
        """The ensemble's teachers by name (empty without an ensemble)."""
        return {name: frozen.model for name, frozen in self._teachers.items()}

    @property
    def has_teacher(self) -> bool:
        return self._teacher is not None or bool(self._teachers)

    def _teacher_mix(self, name: str) -> LossMix | None:
        """The loss that reads teacher ``name``'s hidden states / captured modules, if any."""
        if self.ensemble.mode == "per_teacher":
            return self.ensemble.losses[name]
        return self.loss if name == self.ensemble.primary else None

    def train(self, mode: bool = True) -> TeacherOutputs:
        super().train(mode)
        if self._teacher is not None:
            self._teacher.model.eval()
        for frozen in self._teachers.values():
            frozen.model.eval()
        return self

    def _teacher_outputs(
        self, inputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], split: str
    ) -> ModelOutputs | None:
        """The teacher's outputs under no_grad, in eval mode, on the batch's device; with a teacher
        cache holding ``split`` (``train`` or ``eval``), its stored logits of the batch's examples
        (found by the batch's ``example_index``) and, when the losses read hidden states, the
        cached layers' hidden states laid out as the teacher's (:meth:`_cached_hidden_states`).

        This is the one place the single teacher's outputs come from. Several teachers:
        :meth:`_ensemble_outputs`, the one place theirs come from.
        """
        teacher = self.teacher
        if teacher is None:
            return None
        if self.teacher_cache is not None and split in self.teacher_cache.splits:
            example_index = batch.get("example_index")
            if example_index is None:
                raise ValueError(
                    "teacher_cache: the batch has no example_index, so its cached teacher outputs cannot be "
                    "found; use the run's data module (its datasets carry the column)"
                )
            if self.teacher_cache.token_level(split):
                return ModelOutputs(logits=self._cached_top_k(split, example_index, batch["labels"]))
            hidden_states = None
            if self.hidden_states_needed and self.teacher_cache.hidden_layers(split):
                hidden_states = self._cached_hidden_states(split, example_index, inputs["attention_mask"])
            return ModelOutputs(logits=self.teacher_cache.logits(split, example_index), hidden_states=hidden_states)
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            return model_outputs(teacher, inputs, self.hidden_states_needed, self._teacher.capture)

    def _cached_top_k(self, split: str, example_index: torch.Tensor, labels: torch.Tensor) -> TopKLogits:
        """A causal LM teacher's stored top-k rows laid out as its logits would be, ``(B, T, k)``:
        each example's rows at the positions that predict a scored label (where
        :meth:`~distill.losses.LossInputs.for_next_tokens` reads them; the others stay zero)."""
        rows, counts = self.teacher_cache.token_top_k(split, example_index, self.loss.temperature)
        positions = next_token_positions(labels)  # (B, T - 1)
        scored = positions.sum(1)
        if not torch.equal(scored, counts.to(scored.device)):
            raise ValueError(
                f"teacher cache: examples {example_index.tolist()} score {scored.tolist()} positions in this batch, "
                f"the cache stored {counts.tolist()}; the data's labels differ from those it was built on"
            )
        batch_size, length = labels.shape
        values = rows.values.new_zeros(batch_size, length, rows.k)
        indices = rows.indices.new_zeros(batch_size, length, rows.k)
        tails = rows.tail_logsumexp.new_zeros(batch_size, length)
        values[:, :-1][positions] = rows.values
        indices[:, :-1][positions] = rows.indices
        tails[:, :-1][positions] = rows.tail_logsumexp
        return TopKLogits(values, indices, tails, rows.temperature)

    def _cached_hidden_states(
        self, split: str, example_index: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """The teacher's ``hidden_states`` from the cache: ``num_hidden_layers + 1`` entries, each
        cached layer ``(B, L, H)`` float32 with the example's stored rows at its non-padding
        positions (zeros at padding), ``None`` at the layers not cached (the config checks refuse a
        loss that reads one). A batch whose examples have other real-token counts than stored is
        refused, naming the examples."""
        rows, counts, depth = self.teacher_cache.hidden_states(split, example_index)
        return place_hidden_states(rows, counts, attention_mask, depth, example_index)

    def _ensemble_outputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, ModelOutputs]:
        """Each teacher's outputs under no_grad, in eval mode, on the batch's device (one forward
        each; hidden states and hooks only for the teacher a loss reads them from)."""
        device = inputs["input_ids"].device
        outputs = {}
        for name, frozen in self._teachers.items():
            if next(frozen.model.parameters()).device != device:
                frozen.model.to(device)
            mix = self._teacher_mix(name)
            hidden = mix is not None and mix.uses_hidden_states
            with torch.no_grad():
                outputs[name] = model_outputs(frozen.model, inputs, hidden, frozen.capture)
        return outputs

    def _combined_teacher(self, teachers: dict[str, LossInputs], temperature: float) -> ModelOutputs:
        """``average`` mode: one teacher whose logits are the weighted mixture at ``temperature``
        (the weighted mean prediction for a regression head); hidden states and captured modules of
        the primary teacher."""
        names = list(teachers)
        weights = [self.ensemble.weights[name] for name in names]
        logits = [teachers[name].teacher.logits for name in names]
        if any(tensor is None for tensor in logits):
            combined = None  # a base model (feature_extraction): no logits
        elif self.classification and self.num_labels == 1:
            combined = ensemble_predictions(logits, weights)
        else:
            combined = ensemble_logits(logits, weights, temperature)
        primary = teachers[self.ensemble.primary].teacher if self.ensemble.primary else None
        return ModelOutputs(
            logits=combined,
            hidden_states=primary.hidden_states if primary is not None else None,
            captured=primary.captured if primary is not None else None,
        )
