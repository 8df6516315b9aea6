"""Loss functions for distillation: pure tensor math (torch only), each a function plus a module."""

from distill.losses.base import LossInputs, LossTerm, ModelOutputs, masked_mean
from distill.losses.hidden import CosineHidden, cosine_hidden
from distill.losses.logits import (
    HardLabelCE,
    RegressionMSE,
    SoftTargetKL,
    TeacherMSE,
    hard_label_cross_entropy,
    regression_mse,
    soft_target_kl,
)
from distill.losses.mix import LossMix, LossResult

__all__ = [
    "CosineHidden",
    "HardLabelCE",
    "LossInputs",
    "LossMix",
    "LossResult",
    "LossTerm",
    "ModelOutputs",
    "RegressionMSE",
    "SoftTargetKL",
    "TeacherMSE",
    "cosine_hidden",
    "hard_label_cross_entropy",
    "masked_mean",
    "regression_mse",
    "soft_target_kl",
]
