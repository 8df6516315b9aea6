"""``LossMix``: the weighted sum of named loss terms that a distillation run optimises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from distill.losses.base import FieldError, LossInputs, LossTerm, ModelShape
from distill.losses.logits import _check_temperature
from distill.losses.schedules import Schedule


@dataclass
class LossResult:
    """One step's loss: the total to backpropagate and each term, unweighted and weighted.

    ``counts[name]`` is the number of examples the term saw (0 when it was skipped, e.g. a label
    term on unlabeled text).
    """

    total: torch.Tensor
    unweighted: dict[str, torch.Tensor]
    weighted: dict[str, torch.Tensor]
    counts: dict[str, int]


class LossMix(nn.Module):
    r"""Weighted sum of named terms: :math:`\mathcal{L} = \sum_k w_k \, \mathcal{L}_k`.

    Configured as ``loss.temperature`` plus ``loss.terms.<name>: {weight: w, loss: {_target_: ...}}``.
    A term whose weight is 0 or which is set to ``null`` is off and never computed. The temperature
    is owned here and pushed into every term that uses one, so a schedule changes it in one place.

    A term is skipped (and counted as having seen 0 examples) when the batch lacks what it reads:
    label terms on unlabeled batches, teacher terms without a teacher. On a batch that mixes labeled
    rows with transfer text (``inputs.label_mask``), label terms see only the labeled rows and
    teacher terms see all of them; ``counts`` says how many each term saw.

    ``schedules`` maps a term name, or ``temperature``, to a :class:`Schedule` (as a dict, e.g.
    ``{kind: linear, start: 0, end: 1}``); :meth:`set_progress` applies them. A scheduled term is
    kept even if its starting weight is 0.
    """

    def __init__(
        self,
        terms: Mapping[str, Mapping | None],
        temperature: float = 1.0,
        schedules: Mapping[str, Mapping | Schedule] | None = None,
    ) -> None:
        super().__init__()
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        schedules = dict(schedules or {})
        for name, spec in terms.items():
            if spec is None:
                continue
            weight = float(spec["weight"])
            if weight == 0.0 and name not in schedules:
                continue
            loss = spec["loss"]
            if not isinstance(loss, LossTerm):
                raise TypeError(
                    f"loss.terms.{name}.loss must build a distill.losses.LossTerm, got {type(loss).__name__}"
                )
            if loss.uses_temperature and loss.temperature not in (1.0, float(temperature)):
                raise ValueError(
                    f"loss.terms.{name}.loss.temperature={loss.temperature} would be ignored: the "
                    f"temperature is set once, as loss.temperature (now {temperature})"
                )
            self.weights[name] = weight
            self.terms[name] = loss
        if not self.terms:
            raise ValueError("loss.terms has no term with a non-zero weight; add one, e.g. loss=ce")
        unknown = sorted(set(schedules) - set(self.terms) - {"temperature"})
        if unknown:
            raise ValueError(
                f"loss.schedules: {unknown} name no active term; schedule one of "
                f"{sorted(self.terms) + ['temperature']}"
            )
        self.schedules: dict[str, Schedule] = {}
        for name, schedule in schedules.items():
            try:
                self.schedules[name] = schedule if isinstance(schedule, Schedule) else Schedule(**schedule)
            except (TypeError, ValueError) as error:
                raise ValueError(f"loss.schedules.{name}: {error}") from None
        self.temperature = temperature
        self._uses_labels = any(term.uses_labels for term in self.terms.values())
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> dict[str, float]:
        """Apply the schedules at training progress ``progress`` in [0, 1]; returns the new values."""
        values = {}
        for name, schedule in self.schedules.items():
            values[name] = schedule(progress)
            if name == "temperature":
                self.temperature = values[name]
            else:
                self.weights[name] = values[name]
        return values

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        _check_temperature(value)
        self._temperature = float(value)
        for term in self.terms.values():
            if term.uses_temperature:
                term.temperature = self._temperature

    def bind(self, student: ModelShape, teacher: ModelShape | None, field: str = "loss") -> list[str]:
        """Bind every term to the two models; returns one problem per term that cannot apply, each
        starting with the term's config path (``<field>.terms.<name>``, or the option's for a
        :class:`~distill.losses.base.FieldError`: ``<field>.terms.<name>.loss.student_module=...``)."""
        problems = []
        for name, term in self.terms.items():
            try:
                term.bind(student, teacher)
            except ValueError as error:
                for item in getattr(error, "errors", [error]):
                    if isinstance(item, FieldError):
                        problems.append(f"{field}.terms.{name}.{item.field}={item.value!r}: {item.message}")
                    else:
                        problems.append(f"{field}.terms.{name}: {item}")
        return problems

    @property
    def uses_teacher(self) -> bool:
        return any(term.uses_teacher for term in self.terms.values())

    @property
    def captures(self) -> tuple[str, ...]:
        """Per-layer module outputs any term reads (e.g. ``("key", "query", "value")``)."""
        return tuple(sorted({name for term in self.terms.values() for name in term.captures}))

    @property
    def student_modules(self) -> tuple[str, ...]:
        """Dotted paths of student modules any term reads (captured as ``module:<path>``)."""
        return tuple(sorted({path for term in self.terms.values() for path in term.student_modules}))

    @property
    def teacher_modules(self) -> tuple[str, ...]:
        """Dotted paths of teacher modules any term reads (captured as ``module:<path>``)."""
        return tuple(sorted({path for term in self.terms.values() for path in term.teacher_modules}))

    @property
    def uses_hidden_states(self) -> bool:
        return any(term.uses_hidden_states for term in self.terms.values())

    def forward(self, inputs: LossInputs) -> LossResult:
        batch_size = inputs.attention_mask.size(0)
        unweighted: dict[str, torch.Tensor] = {}
        weighted: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        # From the attention mask: it is there for every task (a base model has no logits).
        total = inputs.attention_mask.new_zeros((), dtype=torch.float32)
        # Label terms read only the labeled rows (transfer text has none); the mask is applied here once.
        labeled, labeled_count = inputs.labeled() if self._uses_labels else (None, 0)
        for name, term in self.terms.items():
            term_inputs, count = (labeled, labeled_count) if term.uses_labels else (inputs, batch_size)
            if term_inputs is None or (term.uses_teacher and inputs.teacher is None):
                counts[name] = 0
                continue
            value = term(term_inputs)
            unweighted[name] = value
            weighted[name] = self.weights[name] * value
            counts[name] = count
            total = total + weighted[name]
        return LossResult(total, unweighted, weighted, counts)

    def formula(self) -> str:
        """The whole objective as text, e.g. ``0.5·[kd: KL(...)·T²] + 0.5·[ce: CE(z_s, y)]  (T=2)``."""
        parts = [f"{self.weights[name]:g}·[{name}: {term.formula}]" for name, term in self.terms.items()]
        return " + ".join(parts) + f"  (T={self._temperature:g})"

    def extra_repr(self) -> str:
        return f"loss = {self.formula()}"
