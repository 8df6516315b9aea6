"""Tests for distill/teacher_finetune.py: a base teacher is fine-tuned once and reused from the cache."""

import logging

import pytest

from conftest import TINY_RUN, compose
from distill.train import train


def test_fine_tuned_teacher_is_cached_and_reused(data_dir, tmp_path, caplog):
    finetune = ["++teacher.finetune.max_steps=3", "report.save_student=false"]
    caplog.set_level(logging.INFO, logger="distill.teacher_finetune")
    first = train(compose([*TINY_RUN, *finetune], tmp_path / "a"))
    (entry,) = (tmp_path / "a" / "cache" / "teachers").iterdir()
    assert (entry / "config.json").is_file() and (entry / "model.safetensors").is_file()
    assert "fine-tuning" in caplog.text and "reusing" not in caplog.text

    caplog.clear()
    # A different student and temperature: same teacher, so the cache answers.
    cache = f"paths.cache_dir={tmp_path / 'a' / 'cache'}"
    second = train(compose([*TINY_RUN, *finetune, cache, "loss.temperature=4"], tmp_path / "b"))
    assert "reusing fine-tuned weights" in caplog.text and "fine-tuning" not in caplog.text
    assert second["teacher"]["accuracy"] == first["teacher"]["accuracy"]

    caplog.clear()
    # Other fine-tuning settings make another teacher.
    train(compose([*TINY_RUN, *finetune[:1], "++teacher.finetune.lr=1e-3", cache], tmp_path / "c"))
    assert len(list((tmp_path / "a" / "cache" / "teachers").iterdir())) == 2


def test_runs_with_other_seeds_share_the_teacher(data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="distill.teacher_finetune")
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    common = [*TINY_RUN, "++teacher.finetune.max_steps=2", "report.save_student=false", cache]
    train(compose([*common, "seed=0"], tmp_path / "a"))
    train(compose([*common, "seed=1"], tmp_path / "b"))
    assert len(list((tmp_path / "cache" / "teachers").iterdir())) == 1
    assert "reusing fine-tuned weights" in caplog.text


#: Each task type through the fine-tune-first path: (data option, extra overrides, headline metric).
TASKS = {
    "single sentence": ("sst2", [], "accuracy"),
    "sentence pair": ("mrpc", ["module.metrics=[accuracy,f1]"], "accuracy"),
    "string labels": ("rte", [], "accuracy"),
    # The shared folder has QNLI's dev set only: it serves as both splits here.
    "question pairs": ("qnli", ["data.train_file=${paths.data_dir}/qnli/dev.tsv"], "accuracy"),
    "headerless file": ("cola", ["module.metrics=[matthews,accuracy]"], "matthews"),
    "regression": ("stsb", ["loss=regression", "module.metrics=[pearson,spearman]"], "pearson"),
    "generic pointed at files": (
        "generic",
        [
            "data.train_file=${paths.data_dir}/rte/train.tsv",
            "data.eval_file=${paths.data_dir}/rte/dev.tsv",
            "data.text_column=sentence1",
            "data.text_pair_column=sentence2",
            "data.label_names=[entailment,not_entailment]",
        ],
        "accuracy",
    ),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_config_runs_with_a_teacher_fine_tuned_first(task, data_dir, tmp_path, caplog):
    data, extra, metric = TASKS[task]
    caplog.set_level(logging.INFO, logger="distill.teacher_finetune")
    cfg = compose([*TINY_RUN, f"data={data}", *extra, "++teacher.finetune.max_steps=2"], tmp_path)
    summary = train(cfg)
    assert "fine-tuning" in caplog.text  # the teacher was fine-tuned on this task's data first
    assert summary["metric"] == metric
    for model in ("teacher", "student"):
        assert summary[model][metric] is not None and -1.0 <= summary[model][metric] <= 1.0


def test_the_fine_tune_has_its_own_progress_bar_counting_its_steps(data_dir, tmp_path, monkeypatch):
    from distill.callbacks import StepProgressBar

    bars = []

    def record(bar, trainer, pl_module):
        task = bar.progress.tasks[bar.train_progress_bar_id]
        bars.append((bar.label, task.description, task.completed, task.total))

    monkeypatch.setattr(StepProgressBar, "on_train_end", record, raising=False)
    finetune = ["++teacher.finetune.max_steps=3", "report.save_student=false"]
    train(compose([*TINY_RUN, *finetune, "trainer.enable_progress_bar=true"], tmp_path / "a"))
    # max_steps=3 and no epoch limit: Lightning's own bar read "Epoch 0/-2".
    ((label, description, completed, total),) = bars
    assert label == "teacher fine-tune" and description.endswith("teacher fine-tune step")
    assert (completed, total) == (3, 3)

    bars.clear()  # trainer.enable_progress_bar=false (TINY_RUN) holds for the fine-tune too
    train(compose([*TINY_RUN, *finetune], tmp_path / "b"))
    assert bars == []


def test_one_file_spelled_two_ways_shares_one_cached_teacher(data_dir, tmp_path, monkeypatch):
    from distill.train import _data_identity

    monkeypatch.chdir(data_dir)
    relative = compose(["data=sst2", "data.train_file=sst2/../sst2/train.tsv"], tmp_path)
    absolute = compose(["data=sst2", f"data.train_file={data_dir / 'sst2' / 'train.tsv'}"], tmp_path)
    assert _data_identity(relative) == _data_identity(absolute)
    other = compose(["data=sst2", f"data.train_file={data_dir / 'sst2' / 'dev.tsv'}"], tmp_path)
    assert _data_identity(other) != _data_identity(absolute)


def test_runs_that_start_together_fine_tune_the_teacher_once(tmp_path, monkeypatch):
    """Two runs needing the same teacher at once (a joblib sweep): one fine-tunes, the other waits
    for it under the file lock and reuses its folder."""
    import threading
    import time

    from distill import teacher_finetune
    from distill.models import ModelSpec

    fine_tunes = []

    def slow_finetune(spec, datamodule, target, **_):
        fine_tunes.append(target)
        time.sleep(0.5)  # long enough for the other run to find no folder and wait on the lock
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        return target

    monkeypatch.setattr(teacher_finetune, "_finetune", slow_finetune)
    spec = ModelSpec(name_or_path="some/base-model", finetune={"max_steps": 2})
    found = []
    runs = [threading.Thread(target=lambda: found.append(teacher_finetune.finetuned_teacher_path(
        spec, None, {"data": "same"}, cache_dir=tmp_path))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    assert len(fine_tunes) == 1 and len(found) == 2 and found[0] == found[1] == fine_tunes[0]
    assert [entry.name for entry in (tmp_path / "teachers").iterdir()] == [fine_tunes[0].name]  # no lock among them
