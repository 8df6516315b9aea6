"""A loss on any module's output, named by dotted path in each model (forward hooks)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses.base import BindErrors, FieldError, LossInputs, LossTerm, ModelShape, masked_mean

#: Distances :func:`module_output_distance` computes.
MODULE_METRICS = ("mse", "cosine")

#: The ``captured`` key prefix of a module named by path (as :func:`distill.models.module_key`;
#: repeated here so the losses import nothing from the models package).
MODULE_PREFIX = "module:"


def module_output_distance(
    student_output: torch.Tensor,
    teacher_output: torch.Tensor,
    attention_mask: torch.Tensor | None,
    metric: str = "mse",
) -> torch.Tensor:
    r"""Distance between one student and one teacher module output, in float32.

    Per row :math:`i` (a token of a ``(B, T, H)`` output, else each vector along the last dimension):

    .. math:: d_i = \frac{1}{H} \lVert s_i - t_i \rVert^2 \ \ (\texttt{mse}) \qquad
              d_i = 1 - \cos(s_i, t_i) \ \ (\texttt{cosine})

    averaged over the real tokens (``attention_mask``) when the output is ``(B, T, H)`` with the
    mask's ``(B, T)``, so padding never contributes; a plain mean over rows otherwise (e.g. a
    pooled ``(B, H)`` output).

    Args:
        student_output: any shape, already projected to the teacher's width.
        teacher_output: the same shape (detached here).
        attention_mask: ``(B, T)`` 1 for real tokens, or ``None``.
        metric: ``mse`` or ``cosine``.

    Returns:
        fp32 scalar; 0 for an empty mask.
    """
    if metric not in MODULE_METRICS:
        raise ValueError(f"metric={metric!r}: choose one of {list(MODULE_METRICS)}")
    if student_output.shape != teacher_output.shape:
        raise ValueError(
            f"module outputs differ in shape: student {tuple(student_output.shape)} vs teacher "
            f"{tuple(teacher_output.shape)} (widths {student_output.size(-1)} vs {teacher_output.size(-1)})"
        )
    student = student_output.float()
    teacher = teacher_output.detach().float()
    if student.dim() < 2:
        student, teacher = student.reshape(-1, 1), teacher.reshape(-1, 1)
    if metric == "mse":
        per_row = (student - teacher).pow(2).mean(-1)
    else:
        per_row = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    if attention_mask is not None and per_row.dim() == 2 and per_row.shape == attention_mask.shape:
        return masked_mean(per_row, attention_mask.bool())
    return masked_mean(per_row, None)


def _paths(value: str | Sequence[str], field: str) -> tuple[str, ...]:
    paths = (value,) if isinstance(value, str) else tuple(str(path) for path in value)
    if not paths or any(not path for path in paths):
        raise ValueError(f"{field}: give a dotted module path (e.g. 'bert.encoder.layer.2.output.dense'), got {value!r}")
    return paths


class ModuleOutputLoss(LossTerm):
    r"""MSE or cosine distance between the outputs of modules named by dotted path in each model.

    .. math:: \mathcal{L} = \frac{1}{P} \sum_{p=1}^{P} \mathrm{mean}_i\, d\big(s^{(p)}_i W_p + b_p,\ t^{(p)}_i\big)

    over the ``P`` pairs (``student_module[p]``, ``teacher_module[p]``), with :math:`d` from
    :func:`module_output_distance` (padding masked for ``(B, T, H)`` outputs). A module returning a
    tuple contributes its first element. Only these modules get forward hooks, and only during each
    model's one forward of a step, so any ``nn.Module`` works, transformers or not.

    ``projection`` as for :class:`~distill.losses.HiddenStateMSE`: ``per_pair`` (a ``Linear``
    for each pair whose widths differ), ``shared`` (one ``Linear`` for all pairs; their widths must
    agree) or ``None`` (widths must match). Widths are read from the modules before weights load
    (``Linear``, ``Embedding``, norms, whole transformer layers); for another module the width is
    known only at run time, so no projection is built and unequal widths fail at the first step.

    Args:
        student_module: dotted path in the student (``bert.encoder.layer.2.output.dense``), or a list.
        teacher_module: dotted path in the teacher, or a list of the same length.
        metric: ``mse`` or ``cosine``.
        projection: ``per_pair``, ``shared`` or ``None``.
    """

    uses_teacher = True
    PROJECTIONS = ("per_pair", "shared", None)

    def __init__(
        self,
        student_module: str | Sequence[str],
        teacher_module: str | Sequence[str],
        metric: str = "mse",
        projection: str | None = "per_pair",
    ) -> None:
        super().__init__()
        if metric not in MODULE_METRICS:
            raise ValueError(f"metric={metric!r}: choose one of {list(MODULE_METRICS)}")
        if projection not in self.PROJECTIONS:
            raise ValueError(f"projection={projection!r}: choose one of {list(self.PROJECTIONS)}")
        self.student_paths = _paths(student_module, "student_module")
        self.teacher_paths = _paths(teacher_module, "teacher_module")
        if len(self.student_paths) != len(self.teacher_paths):
            raise ValueError(
                f"student_module lists {len(self.student_paths)} paths and teacher_module "
                f"{len(self.teacher_paths)}; give one teacher module per student module"
            )
        self.student_modules = tuple(sorted(set(self.student_paths)))
        self.teacher_modules = tuple(sorted(set(self.teacher_paths)))
        self.metric = metric
        self.projection = projection
        self.formula = f"mean_pairs {'MSE' if metric == 'mse' else '1 - cos'}(module_s W, module_t)"
        self.projections = nn.ModuleList()
        #: Per pair: index into ``projections``, or ``None`` (no projection).
        self._projection_of_pair: list[int | None] = [None] * len(self.student_paths)
        self.bound = False

    @staticmethod
    def _width(shape: ModelShape, path: str, field: str) -> int | None:
        if shape.modules is None:
            raise ValueError(f"{shape.name}: its module list is unknown (ModelShape.modules); bind needs it")
        if path not in shape.modules:
            names = [name for name in shape.modules if name]
            close = difflib.get_close_matches(path, names, n=5, cutoff=0.6)
            hint = f"close matches: {close}" if close else f"top-level modules: {[n for n in names if '.' not in n]}"
            raise FieldError(field, path, f"{shape.name} has no module {path!r}; {hint}")
        return shape.modules[path]

    def bind(self, student: ModelShape, teacher: ModelShape | None) -> None:
        if teacher is None:
            return
        field = "loss.student_module", "loss.teacher_module"
        pairs = list(zip(self.student_paths, self.teacher_paths))
        errors: list[ValueError] = []

        def width(shape: ModelShape, path: str, option: str) -> int | None:
            try:
                return self._width(shape, path, option)
            except FieldError as error:
                if not any(str(error) == str(seen) for seen in errors):
                    errors.append(error)
                return None

        widths = [(width(student, s, field[0]), width(teacher, t, field[1])) for s, t in pairs]
        if errors:
            raise errors[0] if len(errors) == 1 else BindErrors(errors)
        differing = [
            index for index, (s, t) in enumerate(widths) if s is not None and t is not None and s != t
        ]

        def describe(index: int) -> str:
            (s_path, t_path), (s_width, t_width) = pairs[index], widths[index]
            return (
                f"student module {s_path!r} (width {s_width}, {student.name}) vs teacher module "
                f"{t_path!r} (width {t_width}, {teacher.name})"
            )

        self.projections = nn.ModuleList()
        self._projection_of_pair = [None] * len(pairs)
        if differing and self.projection is None:
            raise ValueError(
                f"projection=null needs equal widths: {'; '.join(describe(i) for i in differing)}; "
                "set projection: per_pair (or shared)"
            )
        if differing and self.projection == "shared":
            sizes = {widths[index] for index in differing}
            if len(sizes) > 1:
                raise ValueError(
                    f"projection=shared needs one (student, teacher) width for all pairs, got {sorted(sizes)}: "
                    f"{'; '.join(describe(i) for i in differing)}; use projection: per_pair"
                )
            (s_width, t_width), = sizes
            self.projections.append(nn.Linear(s_width, t_width))
            for index in differing:
                self._projection_of_pair[index] = 0
        elif differing:
            for index in differing:
                self._projection_of_pair[index] = len(self.projections)
                self.projections.append(nn.Linear(*widths[index]))
        self.bound = True

    def _project(self, output: torch.Tensor, pair_index: int) -> torch.Tensor:
        index = self._projection_of_pair[pair_index]
        if index is None:
            return output
        projection = self.projections[index]
        return projection(output.to(projection.weight.dtype))

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if not self.bound:
            raise RuntimeError(f"{type(self).__name__} was not bound to the models (call bind first)")
        student, teacher = inputs.student.captured or {}, inputs.teacher.captured or {}
        total = 0.0
        for index, (s_path, t_path) in enumerate(zip(self.student_paths, self.teacher_paths)):
            s_key, t_key = MODULE_PREFIX + s_path, MODULE_PREFIX + t_path
            if s_key not in student or t_key not in teacher:
                raise RuntimeError(
                    f"module outputs {s_key!r} (student) / {t_key!r} (teacher) were not captured: "
                    "the module registers hooks for LossMix.student_modules / teacher_modules"
                )
            student_output, teacher_output = student[s_key][0], teacher[t_key][0]
            if student_output is None or teacher_output is None:
                missing = s_path if student_output is None else t_path
                raise RuntimeError(f"module {missing!r} did not run during the forward pass: nothing to compare")
            projected = self._project(student_output, index)
            if projected.shape != teacher_output.shape:
                how = (
                    "no projection was built: the width of one of them is known only at run time; pick "
                    "Linear/LayerNorm/Embedding submodules or whole layers, or modules of equal widths"
                    if self._projection_of_pair[index] is None
                    else f"projected to {tuple(projected.shape)}"
                )
                raise ValueError(
                    f"student module {s_path!r} output {tuple(student_output.shape)} vs teacher module "
                    f"{t_path!r} output {tuple(teacher_output.shape)}: widths {student_output.size(-1)} vs "
                    f"{teacher_output.size(-1)} ({how})"
                )
            total = total + module_output_distance(projected, teacher_output, inputs.attention_mask, self.metric)
        return total / len(self.student_paths)

    def extra_repr(self) -> str:
        pairs = list(zip(self.student_paths, self.teacher_paths))
        return f"pairs={pairs}, metric={self.metric}, projection={self.projection}"
