"""The ``compress`` group's quantization callbacks: fake-quant QAT during distillation, and PTQ of
the trained student (round-to-nearest, GPTQ, AWQ, SmoothQuant, LLM.int8()-style outliers). Both end with :meth:`compress_student`, which
``distill.train`` calls after the last stage: the student is converted to real integer weights,
evaluated as it will be exported, and saved through :func:`distill.export.save_student`.

Formats, formulas and papers: :mod:`distill.quantization.formats` and docs/compression.md.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import lightning as L
from torch import nn

from distill.callbacks.compression import (
    StudentCompression,
    calibration_inputs,
    refuse_other_settings,
    restart_schedule_at,
    restart_schedule_problems,
)
from distill.errors import ConfigError
from distill.quantization.formats import QuantizationScheme, scheme_problems
from distill.quantization.modules import (
    LEARNED_SCALES,
    convert_student,
    initialize_ranges,
    prepare_student,
    quantized_modules,
    set_fake_quant,
)
from distill.quantization.outliers import split_outlier_features

log = logging.getLogger(__name__)

#: Where the nodes of this file sit in a run config (their problems are named under it).
FIELD = "compress.quantize"


def _positive_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


class _Quantization(StudentCompression):
    method = ""

    def __init__(self, own_problems: list[str], **settings) -> None:
        """``settings`` make the :class:`QuantizationScheme`; ``own_problems`` are the subclass's
        other fields' problems, raised with the scheme's in one :class:`ConfigError`."""
        super().__init__()
        problems = scheme_problems(FIELD, **settings) + own_problems
        if problems:
            raise ConfigError(problems)
        self.scheme = QuantizationScheme(**{**settings, "exclude": tuple(settings.get("exclude") or ())})

    def compress_student(self, module: L.LightningModule, trainer: L.Trainer) -> dict[str, Any]:
        modules = [name for name, _ in quantized_modules(module.student, self.scheme)]
        self.quantize(module.student, trainer)
        _skip_ddp_broadcast_of_integer_weights(module)
        log.info("student converted to %s (%s, %d modules)", self.scheme.describe(), self.method, len(modules))
        return {
            "method": self.method,
            "format": self.scheme.describe(),
            "bits": self.scheme.bits,
            "scheme": self.describe_scheme(),
            "modules": modules,
            **self.extra_figures(),
        }

    def extra_figures(self) -> dict[str, Any]:
        return {}

    def model_problems(self, student: nn.Module) -> list[str]:
        from distill.quantization.formats import width_problems

        return width_problems(FIELD, self.scheme, student)

    def describe_scheme(self) -> dict[str, Any]:
        return {**asdict(self.scheme), "exclude": list(self.scheme.exclude)}

    def quantize(self, student, trainer: L.Trainer) -> None:
        convert_student(student, self.scheme)


def _skip_ddp_broadcast_of_integer_weights(module: L.LightningModule) -> None:
    """Lightning broadcasts every parameter from rank 0 when the evaluation after training sets up
    DDP; torchao's integer weight tensors cannot be broadcast (no ``view``). Every rank converted the
    same synchronised weights, so they are equal already: DDP is told to leave them out."""
    integer = [
        name for name, parameter in module.named_parameters() if type(parameter).__name__ == "IntxUnpackedToInt8Tensor"
    ]
    known = list(getattr(module, "_ddp_params_and_buffers_to_ignore", []))
    module._ddp_params_and_buffers_to_ignore = known + [name for name in integer if name not in known]


class QuantizationAwareTraining(_Quantization):
    """Fake-quant QAT of the student (Jacob et al. 2018; Krishnamoorthi 2018) on torchao's
    ``QATConfig`` prepare → convert; ``weights: ternary`` is BitNet b1.58 (Ma et al. 2024).

    The forward pass sees quantized weights (and int8 activations when asked); the backward pass is
    straight-through. The layers are swapped in :meth:`setup`, before the optimizer is built (the
    parameters stay the same objects). Until ``start_step`` the fake quantizers are off: the run
    distils in full precision first. A resumed run (``ckpt_path=``) prepares the student the same
    way and switches fake-quant on from the restored step; a checkpoint written with another scheme
    is refused.

    Args: see :class:`~distill.quantization.formats.QuantizationScheme`, plus
        start_step: the optimizer step from which fake-quant is on (0: from the start).
        range_learning: symmetric integer or ternary Linear weights: learn each block's scale with
            the weights (LSQ, Esser et al. 2020; torchao's ``range_learning`` for the integers)
            instead of taking it from each step's ``max|w|`` (ternary: ``mean|W|``); set to that
            choice from the weights when fake-quant switches on, then trained; the export uses the
            learned scales. Under DDP with ``start_step > 0`` the scales get no gradient before that
            step: use ``trainer.strategy=ddp_find_unused_parameters_true``.
        scale_lr_ratio: the learned scales' learning rate over the run's (their own optimizer group,
            under the same schedule). At the run's rate a scale moves ~``lr`` per step, a few percent
            of a 2-bit scale in a few hundred steps.
        restart_schedule: the learning-rate schedule (warm-up + decay) starts over at ``start_step``
            for the steps left, so QAT trains at the run's peak rate instead of the tail of its decay
            (LR rewinding, :mod:`distill.lr_schedules`); the steps before it run the schedule over
            themselves. Same steps, same peak rate.
    """

    method = "qat"

    def __init__(
        self,
        weights: str = "int8",
        group_size: int | None = None,
        symmetric: bool = True,
        activations: str | None = None,
        embeddings: str | None = None,
        embedding_group_size: int | None = None,
        exclude: list[str] | tuple[str, ...] = ("classifier",),
        start_step: int = 0,
        range_learning: bool = False,
        scale_lr_ratio: float = 1.0,
        restart_schedule: bool = False,
    ) -> None:
        problems = restart_schedule_problems(FIELD, restart_schedule)
        if isinstance(scale_lr_ratio, bool) or not isinstance(scale_lr_ratio, (int, float)) or scale_lr_ratio <= 0:
            problems.append(f"{FIELD}.scale_lr_ratio={scale_lr_ratio!r}: a number > 0 (the learned scales' "
                            "learning rate over the run's)")
        elif scale_lr_ratio != 1.0 and range_learning is not True:
            problems.append(f"{FIELD}.scale_lr_ratio={scale_lr_ratio}: the learning rate of learned scales; "
                            "set range_learning=true, or scale_lr_ratio=1")
        if not _positive_int(start_step, 0):
            problems.append(f"{FIELD}.start_step={start_step!r}: an integer >= 0 (the step fake-quant starts)")
        if not isinstance(range_learning, bool):
            problems.append(f"{FIELD}.range_learning={range_learning!r}: true or false")
        elif range_learning and weights != "ternary" and not symmetric:
            problems.append(
                f"{FIELD}.range_learning=true: learned scales are for symmetric formats (Z = 0); got "
                "symmetric=false (torchao 0.18's learned zero points do not convert to what they trained). "
                "Set symmetric=true or range_learning=false"
            )
        super().__init__(
            problems, weights=weights, group_size=group_size, symmetric=symmetric, activations=activations,
            embeddings=embeddings, embedding_group_size=embedding_group_size, exclude=exclude,
        )
        self.start_step = start_step
        self.range_learning = range_learning
        self.scale_lr_ratio = float(scale_lr_ratio)
        self.restart_schedule = restart_schedule
        if range_learning:
            self.method = "qat-range"
        self.active: bool | None = None
        #: The learned scales were set from the weights (at the switch, or restored from a checkpoint).
        self.ranges_set = False
        self._module: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.range_learning and self.start_step > 0 and _ddp_without_unused_parameters(trainer):
            raise ConfigError([
                f"{FIELD}.range_learning=true with start_step={self.start_step} under DDP: the learned scales get "
                "no gradient before that step, which DDP refuses. Use trainer.strategy=ddp_find_unused_parameters_true "
                f"or {FIELD}.start_step=0"
            ])
        prepare_student(pl_module.student, self.scheme, range_learning=self.range_learning)
        if self.range_learning and hasattr(pl_module, "lr_ratios"):  # read when the optimizer is built, next
            pl_module.lr_ratios.update(dict.fromkeys(LEARNED_SCALES, self.scale_lr_ratio))
        if self.restart_schedule:
            restart_schedule_at(pl_module, self.start_step)
        swapped = getattr(pl_module, "student_layers_swapped", None)
        if swapped is not None:
            swapped()
        self._module = pl_module
        self._switch(trainer.global_step)

    def _switch(self, step: int) -> None:
        active = step >= self.start_step
        if active != self.active:
            if active:
                log.info("fake-quant on from step %d: %s", step, self.scheme.describe())
                if self.range_learning and not self.ranges_set and self._module is not None:
                    count = initialize_ranges(self._module.student)
                    log.info("learned scales of %d layers set from their weights at step %d", count, step)
                    self.ranges_set = True
            self.active = active

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._switch(trainer.global_step)
        set_fake_quant(pl_module.student, bool(self.active))

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._switch(trainer.global_step)
            set_fake_quant(pl_module.student, bool(self.active))

    def on_train_end(self, trainer, pl_module) -> None:
        set_fake_quant(pl_module.student, True)  # what is converted is what QAT trained for

    def describe_scheme(self) -> dict[str, Any]:
        return {
            **super().describe_scheme(), "range_learning": self.range_learning, "scale_lr_ratio": self.scale_lr_ratio,
            "restart_schedule": self.restart_schedule,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"scheme": self.describe_scheme(), "start_step": self.start_step, "ranges_set": self.ranges_set}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        refuse_other_settings(FIELD, "trained", state_dict.get("scheme"), self.describe_scheme(),
                              added_later={"range_learning": False, "scale_lr_ratio": 1.0, "restart_schedule": False})
        # the checkpoint's student holds the scales as trained: they are not set again from the weights
        self.ranges_set = bool(state_dict.get("ranges_set", False))


def _ddp_without_unused_parameters(trainer: L.Trainer) -> bool:
    """Whether the run is data-parallel (DDP, several processes) with unused parameters refused."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = trainer.strategy
    return (
        isinstance(strategy, DDPStrategy)
        and trainer.world_size > 1
        and not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False)
    )


#: PTQ methods: round-to-nearest; GPTQ (Frantar et al. 2023; :mod:`distill.quantization.gptq`); AWQ
#: (Lin et al. 2024) and SmoothQuant (Xiao et al. 2023), both :mod:`distill.quantization.equalization`.
PTQ_METHODS = ("rtn", "gptq", "awq", "smoothquant")
#: What each method quantizes: weight-only integer formats, or int8 activations too.
WEIGHT_ONLY_METHODS = ("gptq", "awq")


class PostTrainingQuantization(_Quantization):
    """Post-training quantization (PTQ) of the trained student: no training of its own; the student
    distils in full precision and is quantized at the end, with the same formats as
    :class:`QuantizationAwareTraining` (the baselines QAT must beat).

    Args: see :class:`~distill.quantization.formats.QuantizationScheme`, plus
        method: ``rtn`` (round-to-nearest); ``gptq`` (second-order error compensation from the
            inputs each layer sees on ``calibration_batches`` training batches; weight-only, integer
            formats); ``awq`` (per-input-feature scales from the mean |activation|, exponent searched
            per layer for the smallest output error; weight-only, integer formats); ``smoothquant``
            (activation outliers moved into the weights before int8 activations: ``activations:
            int8``). AWQ and SmoothQuant keep their scale as an elementwise product before each
            quantized layer (:class:`~distill.quantization.equalization.InputScaledLinear`).
        calibration_batches: training batches GPTQ, AWQ, SmoothQuant and the outlier search read.
        alpha: ``method: smoothquant`` only: the migration strength ``α`` (default 0.5).
        outlier_threshold: ``method: rtn``, int8 only: input features whose |x| exceeds it on the
            calibration batches stay in float (LLM.int8(), :mod:`distill.quantization.outliers`).
    """

    def __init__(
        self,
        weights: str = "int8",
        group_size: int | None = None,
        symmetric: bool = True,
        activations: str | None = None,
        embeddings: str | None = None,
        embedding_group_size: int | None = None,
        exclude: list[str] | tuple[str, ...] = ("classifier",),
        method: str = "rtn",
        calibration_batches: int = 16,
        outlier_threshold: float | None = None,
        alpha: float | None = None,
    ) -> None:
        problems = []
        if outlier_threshold is not None and method != "rtn":
            problems.append(f"{FIELD}.outlier_threshold: an option of method=rtn (int8), not method={method!r}")
        if method not in PTQ_METHODS:
            problems.append(f"{FIELD}.method={method!r}: allowed: {list(PTQ_METHODS)}")
        elif method in WEIGHT_ONLY_METHODS and (weights == "ternary" or activations):
            problems.append(
                f"{FIELD}.method={method}: weight-only integer formats; got weights={weights!r}, "
                f"activations={activations!r} (use method=rtn for those)"
            )
        elif method == "smoothquant" and (weights == "ternary" or activations != "int8"):
            problems.append(
                f"{FIELD}.method=smoothquant: smooths activations for int8 activation quantization; set "
                f"activations=int8 and integer weights (got weights={weights!r}, activations={activations!r})"
            )
        if alpha is not None and (method != "smoothquant" or isinstance(alpha, bool)
                                  or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1):
            problems.append(f"{FIELD}.alpha={alpha!r}: method=smoothquant's migration strength, 0 <= alpha <= 1, or null")
        if not _positive_int(calibration_batches, 1):
            problems.append(f"{FIELD}.calibration_batches={calibration_batches!r}: an integer >= 1")
        super().__init__(
            problems, weights=weights, group_size=group_size, symmetric=symmetric, activations=activations,
            embeddings=embeddings, embedding_group_size=embedding_group_size, exclude=exclude,
            outlier_threshold=outlier_threshold,
        )
        self.method = f"ptq-{method}"
        self.outlier_features: dict[str, int] | None = None
        self.calibration_batches = calibration_batches
        self.alpha = alpha
        #: What AWQ / SmoothQuant chose per layer (α; the flattening of the activation range).
        self.equalization: dict[str, float] | None = None

    def quantize(self, student, trainer: L.Trainer) -> None:
        if self.scheme.outlier_threshold is not None:
            linears = [name for name, module in quantized_modules(student, self.scheme) if isinstance(module, nn.Linear)]
            self.outlier_features = split_outlier_features(
                student, linears, calibration_inputs(trainer, self.calibration_batches), self.scheme.outlier_threshold
            )
            total = sum(self.outlier_features.values())
            width = sum(student.get_submodule(name).in_features for name in linears)
            log.info("LLM.int8() outliers: %d of %d input features (%.2f%%) kept in float", total, width, 100 * total / width)
        if self.method == "ptq-gptq":
            from distill.quantization.gptq import gptq_quantize

            gptq_quantize(student, self.scheme, calibration_inputs(trainer, self.calibration_batches))
            return
        if self.method in ("ptq-awq", "ptq-smoothquant"):
            from distill.quantization.equalization import SMOOTHQUANT_ALPHA, awq_equalize, smoothquant_equalize

            batches = calibration_inputs(trainer, self.calibration_batches)
            if self.method == "ptq-awq":
                self.equalization = awq_equalize(student, self.scheme, batches)
                log.info("AWQ: mean alpha %.2f over %d layers", sum(self.equalization.values()) / len(self.equalization),
                         len(self.equalization))
            else:
                self.alpha = SMOOTHQUANT_ALPHA if self.alpha is None else self.alpha
                self.equalization = smoothquant_equalize(student, self.scheme, batches, self.alpha)
        convert_student(student, self.scheme)

    def extra_figures(self) -> dict[str, Any]:
        """With ``outlier_threshold``: how many input features stay in float, in all and per layer;
        AWQ: the α chosen per layer; SmoothQuant: α, and per layer how much flatter the activation
        range became (``max/median`` of the feature maxima, before over after)."""
        if self.method == "ptq-awq" and self.equalization is not None:
            return {"awq_alpha_per_layer": self.equalization}
        if self.method == "ptq-smoothquant" and self.equalization is not None:
            return {"smoothquant_alpha": self.alpha, "smoothquant_flattening_per_layer": self.equalization}
        if self.outlier_features is None:
            return {}
        return {"outlier_features": sum(self.outlier_features.values()), "outlier_features_per_layer": self.outlier_features}
