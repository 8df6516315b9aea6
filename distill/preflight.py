"""The checks a run makes before training, beyond the config's own (:mod:`distill.validation`):
tokenizers and model configs, the data read and checked without tokenizing, and what ``ckpt_path``
holds. Each adds its problems to one list, so :func:`distill.train.build_run` refuses a run once
with all of them."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.checkpoints import checkpoint_keys, checkpoint_stage, mismatch_problems
from distill.errors import ConfigError
from distill.models import ModelSpec, load_tokenizer
from distill.module import DistillationModule
from distill.quantization.modules import LEARNED_SCALES
from distill.validation import check_model_pair
from distill.validation.specs import model_spec
from distill.validation.targets import broken, target_problems


def checked_data(cfg: DictConfig, tokenizer, problems: list[str]) -> L.LightningDataModule | None:
    """Build the data module and read and check its data (no tokenizing); its problems join
    ``problems``. ``None`` when it cannot be built (its problems are in ``problems`` already)."""
    if tokenizer is None or broken("data", target_problems(cfg)):
        return None  # the tokenizer's or the data node's problem is reported already
    try:
        datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    except ValueError as error:  # DataConfigError from the arguments themselves
        problems.extend(p for p in getattr(error, "problems", [str(error)]) if p not in problems)
        return None
    problems.extend(datamodule.check())
    return datamodule


def prepared_data(cfg: DictConfig, tokenizer, problems: list[str]) -> L.LightningDataModule:
    """Every problem found so far and the data's, raised together; else the tokenized data."""
    datamodule = checked_data(cfg, tokenizer, problems)
    if problems or datamodule is None:
        raise ConfigError(problems)
    return datamodule.prepare()


def tokenizer_or_problem(spec: ModelSpec | None, field: str, problems: list[str], fallback=None):
    """``spec``'s tokenizer, or ``None`` with a problem naming ``field`` when it cannot be read."""
    if spec is None:
        return fallback
    try:
        return load_tokenizer(spec, fallback=fallback)
    except (OSError, ValueError) as error:  # a missing folder, hub name or package
        problems.append(f"{field}: cannot load the tokenizer: {error}")
        return None


def check_pair(problems: list[str], *args, **kwargs) -> None:
    """:func:`check_model_pair`, its problems (and a model config that cannot be read) joining ``problems``."""
    try:
        found = check_model_pair(*args, **kwargs)
    except (OSError, ValueError) as error:
        found = [f"teacher/student: cannot read a model config: {error}"]
    problems.extend(p for p in found if p not in problems)


def resumed_stage(stages: list[tuple[str | None, DictConfig]], ckpt_path: str | None) -> int:
    """The index of the stage ``ckpt_path`` was written in (0 without stages or a checkpoint): the
    stages before it are done, that one resumes, the later ones follow."""
    if len(stages) == 1 or not ckpt_path:
        return 0
    names = [name for name, _ in stages]
    stage = checkpoint_stage(str(ckpt_path))
    if stage not in names:
        raise ConfigError(
            [
                f"ckpt_path={str(ckpt_path)!r} was written in stage {stage!r}, not one of this run's stages "
                f"{names}. Fix: resume with the stages of the run that wrote it (its .hydra/overrides.yaml), "
                "e.g. its checkpoints/<stage>/last.ckpt"
            ]
        )
    return names.index(stage)


def refuse_foreign_checkpoint(cfg: DictConfig, module: DistillationModule) -> None:
    """``ckpt_path`` must hold this run's module (same weights, same shapes): checked once the student
    is built, before training, instead of failing inside Lightning's ``load_state_dict``. The
    learned QAT scales are not there yet (the callback adds them at setup): expected in the
    checkpoint exactly when the run learns them."""
    if not cfg.get("ckpt_path"):
        return
    learns = any(getattr(node, "get", lambda _: None)("range_learning") for node in (cfg.get("compress") or {}).values())
    problems = mismatch_problems(str(cfg.ckpt_path), module.state_dict(),
                                 added_later=(lambda key: key.endswith(LEARNED_SCALES)) if learns else None)
    # learned scales the run does not expect make the checkpoint look foreign: say why (only then read it again)
    if problems and not learns and any(key.endswith(LEARNED_SCALES) for key in checkpoint_keys(str(cfg.ckpt_path))):
        problems = [f"ckpt_path={str(cfg.ckpt_path)!r} was trained with learned quantization scales: resume with "
                    "compress.quantize.range_learning=true (its .hydra/overrides.yaml)"]
    if problems:
        raise ConfigError(problems)


def ensemble_tokenizer(cfg: DictConfig, student_spec: ModelSpec | None, problems: list[str]):
    """A tokenizer to check the data with when the teachers' config has problems: the student's, or
    the first teacher's that names one."""
    teacher_specs = [model_spec(cfg, f"teachers.{name}.model", []) for name in cfg.teachers]
    for spec in (student_spec, *teacher_specs):
        if spec is not None and (spec.tokenizer or spec.name_or_path or spec.init_source):
            return tokenizer_or_problem(spec, "tokenizer", problems)
    return None
