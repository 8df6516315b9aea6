"""Loss functions for distillation: pure tensor math (torch only), each a function plus a module."""

from distill.losses.attention import (
    AttentionScoreMSE,
    MiniLMRelations,
    attention_score_mse,
    relation_kl,
    scaled_scores,
)
from distill.losses.base import FieldError, LossInputs, LossTerm, ModelOutputs, ModelShape, TopKLogits, masked_mean
from distill.losses.ensemble import ensemble_logits, ensemble_predictions, normalised_weights
from distill.losses.hidden import (
    CosineHidden,
    HiddenStateMSE,
    PatientKD,
    cosine_hidden,
    hidden_mse,
    pkd_cls_mse,
)
from distill.losses.layer_map import LAYER_MAP_STRATEGIES, resolve_layer_map
from distill.losses.logits import (
    HardLabelCE,
    LogitMSE,
    RegressionMSE,
    SoftCrossEntropy,
    SoftTargetKL,
    TeacherMSE,
    hard_label_cross_entropy,
    logit_mse,
    regression_mse,
    soft_cross_entropy,
    soft_target_kl,
)
from distill.losses.mix import LossMix, LossResult
from distill.losses.modules import MODULE_METRICS, ModuleOutputLoss, module_output_distance
from distill.losses.schedules import SCHEDULE_KINDS, Schedule
from distill.losses.tokens import (
    GeneralizedJSD,
    TokenForwardKL,
    TokenReverseKL,
    generalized_jsd,
    token_forward_kl,
    token_reverse_kl,
)

__all__ = [
    "LAYER_MAP_STRATEGIES",
    "SCHEDULE_KINDS",
    "AttentionScoreMSE",
    "MiniLMRelations",
    "MODULE_METRICS",
    "TopKLogits",
    "ModuleOutputLoss",
    "module_output_distance",
    "attention_score_mse",
    "relation_kl",
    "scaled_scores",
    "Schedule",
    "CosineHidden",
    "HardLabelCE",
    "HiddenStateMSE",
    "LogitMSE",
    "ModelShape",
    "PatientKD",
    "SoftCrossEntropy",
    "hidden_mse",
    "logit_mse",
    "pkd_cls_mse",
    "resolve_layer_map",
    "soft_cross_entropy",
    "FieldError",
    "LossInputs",
    "LossMix",
    "LossResult",
    "LossTerm",
    "ModelOutputs",
    "RegressionMSE",
    "SoftTargetKL",
    "TeacherMSE",
    "cosine_hidden",
    "ensemble_logits",
    "ensemble_predictions",
    "normalised_weights",
    "hard_label_cross_entropy",
    "masked_mean",
    "regression_mse",
    "soft_target_kl",
    "GeneralizedJSD",
    "TokenForwardKL",
    "TokenReverseKL",
    "generalized_jsd",
    "token_forward_kl",
    "token_reverse_kl",
]
