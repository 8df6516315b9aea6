"""The frozen teacher(s): :class:`_FrozenTeacher` (how any teacher is held) and :class:`TeacherEnsemble`
(several teachers and how the student learns from them). Split from :mod:`distill.module`, which
re-exports both names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from distill.losses import LossMix
from distill.losses.ensemble import normalised_weights
from distill.models.capture import capture_modules


class _FrozenTeacher:
    """Holds the teacher outside ``nn.Module`` registration.

    Unregistered, the teacher is absent from ``state_dict`` (checkpoints stay student-sized), from
    ``parameters()`` (no optimizer state, no DDP gradient sync or FSDP/DeepSpeed wrapping) and from
    the recursive ``.train()`` that Lightning calls (its dropout stays off).
    """

    def __init__(
        self, model: nn.Module, capture_names: tuple[str, ...] = (), module_paths: tuple[str, ...] = ()
    ) -> None:
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.capture = capture_modules(model, capture_names, module_paths, role="teacher")


#: ``TeacherEnsemble.mode`` values.
ENSEMBLE_MODES = ("average", "per_teacher")


@dataclass
class TeacherEnsemble:
    r"""Several frozen teachers and how the student learns from them (multi-teacher distillation).

    Design. Every teacher is held like the single teacher (:class:`_FrozenTeacher`: frozen, eval
    mode, run under no_grad, unregistered, so absent from ``state_dict``, the optimizer and DDP) and
    runs once per step, with hooks and hidden states only where a loss reads them. Weights are
    normalised, :math:`\tilde w_k = w_k / \sum_j w_j`, so one teacher of any weight is the
    single-teacher objective. Two modes:

    - ``average`` (ensemble distillation: Hinton et al. 2015, arXiv:1503.02531, §4;
      Fukuda et al. 2017, Interspeech): the run's ``loss`` reads one combined teacher. Its logits are
      :func:`~distill.losses.ensemble_logits` at the loss's current temperature ``T``,
      :math:`z = T \log \sum_k \tilde w_k \mathrm{softmax}(z_k/T)`, so ``softmax(z/T)`` is the
      weighted mixture of the teachers' tempered distributions; a regression head gets the weighted
      mean prediction. Hidden states and captured modules come from ``primary`` (hidden-state,
      attention and module terms need one). Total: ``loss(student, combined teacher)``.
    - ``per_teacher``: teacher ``k`` has its own :class:`LossMix` ``losses[k]`` (teacher terms
      only, bound to that teacher: its own layer maps and projections, registered under
      ``teacher_losses.<k>``); the run's ``loss`` holds the label terms and reads no teacher.
      Total: :math:`\mathcal{L} = \mathcal{L}_{loss}(\text{student}, y) + \sum_k \tilde w_k\,
      \mathcal{L}_{losses[k]}(\text{student}, \text{teacher}_k)`; each teacher term is logged as
      ``train/loss/<k>/<term>`` (``_weighted`` includes :math:`\tilde w_k`).

    Validation reports each teacher (``val/teacher/<k>/<metric>``) and the ensemble
    (``val/ensemble/<metric>``: argmax of the weighted mixture of the teachers' probabilities at
    ``T = 1``, or the weighted mean prediction for regression), plus the student's agreement with the
    ensemble (``val/agreement/ensemble``).

    Attributes:
        teachers: name -> model (frozen here).
        weights: name -> weight > 0 (normalised here).
        mode: ``average`` or ``per_teacher``.
        losses: ``per_teacher``: name -> that teacher's :class:`LossMix`.
        primary: ``average``: the teacher whose hidden states / captured modules the loss reads.
    """

    teachers: Mapping[str, nn.Module]
    weights: Mapping[str, float] = field(default_factory=dict)
    mode: str = "average"
    losses: Mapping[str, LossMix] | None = None
    primary: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ENSEMBLE_MODES:
            raise ValueError(f"teacher_ensemble.mode={self.mode!r}: choose one of {list(ENSEMBLE_MODES)}")
        if not self.teachers:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        weights = {name: self.weights.get(name, 1.0) for name in self.teachers}
        self.weights = normalised_weights(weights)
        if self.primary is not None and self.primary not in self.teachers:
            raise ValueError(f"teacher_ensemble.primary={self.primary!r}: not one of {list(self.teachers)}")
        if self.mode == "per_teacher":
            missing = sorted(set(self.teachers) - set(self.losses or {}))
            if missing:
                raise ValueError(f"teacher_ensemble.mode=per_teacher: teachers {missing} have no loss")
        elif self.losses:
            raise ValueError("teacher_ensemble.mode=average: the run's loss reads the combined teacher; no per-teacher losses")
