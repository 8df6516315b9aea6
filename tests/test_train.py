"""``build_run`` refuses a run in one pass: config, model configs, tokenizers and data problems
together, before anything is tokenized or any weights load (distill/train.py)."""

import pytest

import distill.data.datamodule as datamodule_module
import distill.data.sources as sources_module
import distill.train as train_module
from conftest import TINY_RUN, compose
from distill.train import build_run
from distill.validation import ConfigError


def _refuse_work(monkeypatch):
    """Make tokenizing and weight loading fail loudly: a one-pass refusal must reach neither."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tokenized data or built a model before every problem was reported")

    monkeypatch.setattr(datamodule_module.TextClassificationDataModule, "_build", forbidden)
    monkeypatch.setattr(train_module, "build_model", forbidden)


def test_config_model_and_data_problems_are_reported_together(data_dir, tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    cfg = compose(
        [
            "student=from_teacher_3l",  # copies teacher layers: [0, 2, 9] is out of range for 2 layers
            "student.init_from_teacher_layers=[0,9]",
            "teacher=tiny_random",
            "debug=fast",
            "logger=csv",
            "callbacks=none",
            "loss.temperature=0",
            "+optimizer.lrr=1e-3",  # an unknown key: reported, and the rest is still checked
            f"data.train_file={tmp_path / 'absent.tsv'}",
            "data.text_column=sentnce",
        ],
        tmp_path,
    )
    with pytest.raises(ConfigError) as raised:
        build_run(cfg)
    problems = raised.value.problems
    assert len(problems) == 5, problems
    expected = [
        "optimizer.lrr: unknown option",
        "loss.temperature=0",
        "student.init_from_teacher_layers=[0, 9]: indices [9] out of range",
        f"data.train_file='{tmp_path / 'absent.tsv'}': file not found",
        "data.text_column='sentnce' is not a column of the eval data",
    ]
    for text in expected:
        assert sum(text in problem for problem in problems) == 1, (text, problems)


def test_readme_example_prints_both_problems(data_dir, tmp_path, monkeypatch):
    _refuse_work(monkeypatch)
    cfg = compose(["experiment=quickstart", "loss.temperature=0", "student.init_from_teacher_layers=[0,2,9]"], tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_run(cfg)
    (temperature, layers) = raised.value.problems
    assert temperature.startswith("loss.temperature=0: must be a number > 0")
    assert layers.startswith("student.init_from_teacher_layers=[0, 2, 9]: indices [9] out of range")
    assert "which has 6 layers (valid: 0..5)" in layers


def test_a_named_file_that_is_missing_never_switches_to_the_hub(data_dir, tmp_path, monkeypatch):
    hub_reads = []
    monkeypatch.setattr(sources_module, "load_hub_split", lambda *args: hub_reads.append(args))
    cfg = compose([*TINY_RUN, "data=sst2", f"data.train_file={tmp_path / 'nonexistent.tsv'}"], tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_run(cfg)
    (problem,) = raised.value.problems
    assert problem.startswith(f"data.train_file='{tmp_path / 'nonexistent.tsv'}': file not found")
    assert "data.train_file=null" in problem  # how to read the hub instead, on purpose
    assert hub_reads == []


def test_without_a_data_folder_the_task_configs_read_the_hub(tmp_path, monkeypatch):
    import datasets

    hub_reads = []

    def fake_hub(name, subset, split):
        hub_reads.append((name, subset, split))
        return datasets.Dataset.from_dict({"sentence": ["a fine film", "dull"] * 8, "label": [1, 0] * 8})

    monkeypatch.setattr(sources_module, "load_hub_split", fake_hub)
    cfg = compose([*TINY_RUN, "data=sst2", "paths.data_dir=null"], tmp_path)
    assert cfg.data.train_file is None and cfg.data.eval_file is None
    _, datamodule, _, _ = build_run(cfg)
    assert hub_reads == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert datamodule.data_sources["train"] == "hub dataset glue/sst2 split 'train'"


def test_with_a_data_folder_the_task_configs_name_its_files(tmp_path):
    cfg = compose(["data=mrpc", f"paths.data_dir={tmp_path}"], tmp_path)
    assert cfg.data.train_file == f"{tmp_path}/mrpc/train.tsv"
    assert cfg.data.eval_file == f"{tmp_path}/mrpc/dev.tsv"


def test_a_stage_typo_is_reported_with_the_other_problems(data_dir, tmp_path, monkeypatch):
    from distill.train import train

    _refuse_work(monkeypatch)
    cfg = compose([*TINY_RUN, "experiment=tinybert_task", "+stages.prediction.max_step=2", "loss.temperature=0"], tmp_path)
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    problems = raised.value.problems
    assert any(p.startswith("stages.prediction: unknown keys ['max_step']") for p in problems), problems
    assert any(p.startswith("loss.temperature=0") for p in problems), problems
