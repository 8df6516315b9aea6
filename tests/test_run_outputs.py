"""What a run leaves on disk and says at its end: where it saved (paths printed), files others can
read (umask modes), class names in the saved student, no folder for a refused run, and checkpoints
sized for sweeps (distill/train.py, distill/cli.py, distill/run_folder.py, distill/checkpoints.py,
distill/conf/data/, distill/conf/callbacks/default.yaml)."""

import logging
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, pipeline

from conftest import TINY_RUN, compose
from distill.validation import check_run_config
from test_cli import CONF_DIR, run_cli

#: The class names each GLUE classification config gives its students (stsb: regression, none).
GLUE_LABELS = {
    "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"],
    "cola": ["unacceptable", "acceptable"],
    "rte": ["entailment", "not_entailment"],
    "qnli": ["entailment", "not_entailment"],
}
#: A tiny run that keeps the default checkpoint callback (without the progress bar).
TINY_RUN_CHECKPOINTED = [*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def saved_paths(output: str) -> dict[str, Path]:
    """The paths of the end-of-run lines ``run folder: ...``, ``student: ...``, ``metrics: ...``,
    ``checkpoint: ...``."""
    found = {}
    for name in ("run folder", "student", "metrics", "checkpoint"):
        match = re.search(rf"(?:^|\s){name}:\s+(\S+)", output, re.MULTILINE)
        assert match, f"no '{name}:' line in the output:\n{output[-3000:]}"
        found[name] = Path(match.group(1))
    return found


def test_every_data_config_names_its_classes(tmp_path):
    tasks = sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml"))
    assert set(GLUE_LABELS) | {"stsb"} <= set(tasks)
    for task, names in GLUE_LABELS.items():
        data = compose([f"data={task}"], tmp_path / task).data
        assert list(data.label_names) == names and data.num_labels == len(names), task
        assert str(data.eval_file).endswith(f"{task}/dev.tsv") and data.hub_subset == task
    stsb = compose(["data=stsb"], tmp_path / "stsb").data
    assert stsb.label_names is None and stsb.num_labels == 1


def test_qnli_config_reads_the_shared_dev_file(tmp_path, tokenizer, data_dir):
    data = compose(["data=qnli", f"data.train_file={data_dir / 'qnli' / 'dev.tsv'}", "data.train_limit=16",
                    "data.eval_limit=16"], tmp_path).data
    from hydra.utils import instantiate

    datamodule = instantiate(data, tokenizer=tokenizer).prepare()
    assert datamodule.label_names == ["entailment", "not_entailment"]
    assert set(datamodule.eval_dataset["labels"]) == {0, 1}  # the file's string labels, mapped
    assert "token_type_ids" in datamodule.eval_dataset.column_names  # question/sentence pairs


def test_cli_run_ends_with_its_paths_and_writes_readable_files_with_class_names(data_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        result = run_cli(TINY_RUN_CHECKPOINTED, tmp_path)
    finally:
        os.umask(previous)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    paths = saved_paths(output)
    run_dir = paths["run folder"]
    assert run_dir.parent.parent == tmp_path / "logs" / "runs"
    assert paths["student"] == run_dir / "student" and paths["metrics"] == run_dir / "metrics.json"
    assert paths["checkpoint"] == run_dir / "checkpoints" / "last.ckpt"
    for path in paths.values():
        assert path.exists(), path
    # The paths are logged, so they are in the run's log too.
    assert f"checkpoint: {paths['checkpoint']}" in (run_dir / "cli.log").read_text()
    # Readable by others, as a plain write under umask 022 would be.
    assert mode(run_dir / "student") == 0o755
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert mode(run_dir / "student" / name) == 0o644, name
    assert mode(run_dir / "metrics.json") == 0o644
    assert mode(paths["checkpoint"]) == 0o644
    # A single run's checkpoint is the full, resumable one.
    assert "optimizer_states" in torch.load(paths["checkpoint"], weights_only=False, mmap=True)
    # The student names its classes: config.id2label and a pipeline answer in words.
    config = AutoConfig.from_pretrained(paths["student"])
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.label2id == {"negative": 0, "positive": 1}
    classify = pipeline("text-classification", model=str(paths["student"]), device="cpu")
    (prediction,) = classify("a gripping , funny film")
    assert prediction["label"] in ("negative", "positive")


def test_refused_run_leaves_no_folder(tmp_path):
    result = run_cli([*TINY_RUN, "loss.temperature=-1"], tmp_path)
    assert result.returncode == 2
    assert "loss.temperature=-1" in result.stdout + result.stderr
    assert not (tmp_path / "logs").exists() or list((tmp_path / "logs").iterdir()) == []


def test_multirun_saves_weights_only_checkpoints_that_resume_refuses(data_dir, tmp_path):
    result = run_cli(["-m", *TINY_RUN_CHECKPOINTED, "loss.temperature=1,4"], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    checkpoints = sorted((tmp_path / "logs" / "multiruns").glob("*/*/*/checkpoints/last.ckpt"))
    assert [path.parts[-3] for path in checkpoints] == ["0", "1"]
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=False, mmap=True)
        assert "state_dict" in checkpoint and "optimizer_states" not in checkpoint and "lr_schedulers" not in checkpoint
    assert output.count("(weights only: not resumable") == 2
    # Resuming from one is refused by validation, with the fix, before anything loads.
    problems, _, _ = check_run_config(compose([*TINY_RUN, f"ckpt_path={checkpoints[0]}"], tmp_path))
    assert len(problems) == 1 and "holds weights only" in problems[0]
    assert "callbacks.model_checkpoint.save_weights_only=false" in problems[0]


def test_multirun_full_checkpoint_on_request_and_refused_job_leaves_no_folder(data_dir, tmp_path):
    """One option gives a sweep full checkpoints. A refused job stops the sweep (Hydra's multirun ends at
    a job's sys.exit) and leaves no folder; the finished job before it stays."""
    result = run_cli(
        ["-m", *TINY_RUN_CHECKPOINTED, "callbacks.model_checkpoint.save_weights_only=false", "loss.temperature=1,-1"],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "loss.temperature=-1: must be a number > 0" in output
    (sweep_dir,) = (tmp_path / "logs" / "multiruns").glob("*/*")
    assert sorted(path.name for path in sweep_dir.iterdir()) == ["0", "multirun.yaml"]
    checkpoint = torch.load(sweep_dir / "0" / "checkpoints" / "last.ckpt", weights_only=False, mmap=True)
    assert "optimizer_states" in checkpoint and "lr_schedulers" in checkpoint
    assert check_run_config(compose([*TINY_RUN, f"ckpt_path={sweep_dir / '0' / 'checkpoints' / 'last.ckpt'}"],
                                    tmp_path))[0] == []


@pytest.mark.parametrize("contents", ["metrics.json", "notes.txt"])
def test_a_folder_with_anything_else_is_kept(contents, tmp_path):
    """Only what Hydra wrote for the job goes: a run folder with any other file stays."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from distill.run_folder import remove_refused_run_folder

    folder = tmp_path / "logs" / "runs" / "2026-01-31" / "12-00-00"
    (folder / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).write_text("{}\n")
    job_log = logging.FileHandler(folder / "cli.log")  # Hydra's job logging writes <run dir>/<job>.log
    logging.getLogger().addHandler(job_log)
    with initialize_config_module(config_module="distill.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="train", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(folder)
    HydraConfig.instance().set_config(cfg)  # as in the job whose folder this is
    (folder / contents).write_text("{}")
    assert remove_refused_run_folder(tmp_path / "logs") is None and folder.is_dir()
    (folder / contents).unlink()
    try:
        assert remove_refused_run_folder(tmp_path / "logs") == folder
    finally:
        logging.getLogger().removeHandler(job_log)
        job_log.close()
    assert list((tmp_path / "logs").iterdir()) == []  # its empty date and runs/ folders went too


def test_with_stages_the_last_stages_checkpoint_is_logged(data_dir, tmp_path, caplog):
    from distill.train import train

    cfg = compose(["experiment=tinybert_task", *TINY_RUN_CHECKPOINTED, "stages.intermediate.max_steps=1",
                   "stages.prediction.max_steps=1", "report.save_student=false"], tmp_path)
    with caplog.at_level(logging.INFO, logger="distill"):
        train(cfg)
    paths = saved_paths(caplog.text)
    assert paths["checkpoint"] == tmp_path / "run" / "checkpoints" / "prediction" / "last.ckpt"
    assert paths["checkpoint"].is_file() and paths["metrics"].is_file()
    assert "student:    not saved (report.save_student=false)" in caplog.text
