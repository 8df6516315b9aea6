"""Checks of a multi-teacher config (``teachers``, ``teacher_ensemble``)."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.models import ModelSpec
from distill.validation.specs import is_number, model_spec

#: Keys of one ``teachers.<name>`` entry, and of ``teacher_ensemble``.
TEACHER_ENTRY_KEYS = ("model", "weight", "loss")
ENSEMBLE_KEYS = ("mode", "primary")


def check_teachers(cfg: DictConfig, loss) -> tuple[list[str], dict[str, ModelSpec]]:
    """Problems of a multi-teacher config (``teachers``, ``teacher_ensemble``) and the teachers'
    specs; ``([], {})`` without ``teachers``. ``loss`` is the run's built loss (or ``None``).

    See :class:`distill.module.TeacherEnsemble` for what the modes mean.
    """
    from distill.losses import LossMix
    from distill.module import ENSEMBLE_MODES

    node = cfg.get("teachers")
    if node is None:
        return [], {}
    problems: list[str] = []
    if not isinstance(node, DictConfig) or not node:
        return [f"teachers={node}: give {{name: {{model: <teacher node>, weight: w}}, ...}} (or null for one teacher)"], {}
    if cfg.get("teacher"):
        problems.append(
            "teacher and teachers are both set: with several teachers set teacher=none (an experiment: "
            "`override /teacher: none`) and give each one under teachers.<name>.model"
        )
    if cfg.get("stages"):
        problems.append("stages with teachers: multi-stage runs take one teacher for now; drop one of them")
    ensemble = cfg.get("teacher_ensemble") or {}
    unknown = sorted(set(ensemble) - set(ENSEMBLE_KEYS))
    if unknown:
        problems.append(f"teacher_ensemble: unknown keys {unknown}; valid: {list(ENSEMBLE_KEYS)}")
    mode = ensemble.get("mode", "average")
    if mode not in ENSEMBLE_MODES:
        problems.append(f"teacher_ensemble.mode={mode!r}: choose one of {list(ENSEMBLE_MODES)}")
    primary = ensemble.get("primary")
    if primary is not None and primary not in node:
        problems.append(f"teacher_ensemble.primary={primary!r}: not one of the teachers {list(node)}")
    specs: dict[str, ModelSpec] = {}
    for name, entry in node.items():
        field = f"teachers.{name}"
        if "/" in str(name) or "." in str(name):
            problems.append(f"{field}: a teacher name must not contain '/' or '.' (it names metrics)")
        if not isinstance(entry, DictConfig) or "model" not in entry:
            problems.append(f"{field}: give {{model: <a teacher/*.yaml node>, weight: w}}")
            continue
        unknown = sorted(set(entry) - set(TEACHER_ENTRY_KEYS))
        if unknown:
            problems.append(f"{field}: unknown keys {unknown}; valid: {list(TEACHER_ENTRY_KEYS)}")
        weight = entry.get("weight", 1.0)
        if not is_number(weight) or not 0 < weight < float("inf"):
            problems.append(
                f"{field}.weight={weight}: must be a number > 0 (weights are normalised to sum to 1; "
                "drop a teacher to leave it out)"
            )
        spec = model_spec(cfg, f"{field}.model", problems)
        if spec is None and not any(p.startswith(f"{field}.model") for p in problems):
            problems.append(f"{field}.model is empty: give a teacher node (e.g. `/teacher@{field}.model: minilm_l6`)")
        if spec is not None:
            specs[str(name)] = spec
            if cfg.task != "sequence_classification" and spec.finetune:
                problems.append(
                    f"{field}.model.finetune={dict(spec.finetune)} fine-tunes a classification head, which "
                    f"task={cfg.task} does not use: set it to null"
                )
        teacher_loss = entry.get("loss")
        if mode == "average" and teacher_loss is not None:
            problems.append(
                f"{field}.loss is set but teacher_ensemble.mode=average: the run's loss reads the combined "
                "teacher; set teacher_ensemble.mode=per_teacher, or drop it"
            )
        if mode == "per_teacher":
            if teacher_loss is None:
                problems.append(
                    f"{field}.loss: teacher_ensemble.mode=per_teacher needs each teacher's own loss "
                    f"(a loss/*.yaml node, e.g. `/loss@{field}.loss: kd`)"
                )
                continue
            try:
                mix = instantiate(teacher_loss)
            except Exception as error:  # noqa: BLE001
                problems.append(f"{field}.loss: cannot be built: {error}")
                continue
            if not isinstance(mix, LossMix):
                problems.append(f"{field}.loss must build a distill.losses.LossMix, got {type(mix).__name__}")
                continue
            label_terms = [term_name for term_name, term in mix.terms.items() if term.uses_labels]
            if label_terms:
                problems.append(
                    f"{field}.loss.terms {label_terms} read labels: label terms belong to the run's loss "
                    "(counted once), not to a teacher's"
                )
            if not mix.uses_teacher:
                problems.append(f"{field}.loss has no teacher term: it would not read teacher {name!r}")
    if loss is not None and mode in ENSEMBLE_MODES:
        teacher_terms = [name for name, term in loss.terms.items() if term.uses_teacher]
        if mode == "per_teacher" and teacher_terms:
            problems.append(
                f"loss.terms {teacher_terms} read a teacher, but with teacher_ensemble.mode=per_teacher "
                "each teacher's terms go in teachers.<name>.loss; the run's loss keeps the label terms"
            )
        if mode == "average":
            if not teacher_terms:
                problems.append(
                    "teachers are set but the run's loss has no teacher term (teacher_ensemble.mode=average "
                    "reads the combined teacher through it); use e.g. loss=kd_ce"
                )
            untempered = [
                name for name, term in loss.terms.items()
                if term.uses_teacher and term.uses_class_logits and not term.uses_temperature
            ]
            if untempered:
                problems.append(
                    f"loss.terms {untempered}: with teacher_ensemble.mode=average the teacher logits are the "
                    "log of the teachers' mixed probabilities (times T), not logits to regress on; use "
                    "SoftTargetKL / SoftCrossEntropy, or teacher_ensemble.mode=per_teacher"
                )
            inner = [
                name for name, term in loss.terms.items()
                if term.uses_teacher and (term.uses_hidden_states or term.captures or term.teacher_modules)
            ]
            if inner and primary is None:
                problems.append(
                    f"loss.terms {inner} read teacher hidden states or modules, which an average of "
                    f"teachers does not have: set teacher_ensemble.primary to one of {list(node)} (they "
                    "read that teacher), or use teacher_ensemble.mode=per_teacher"
                )
    return problems, specs
