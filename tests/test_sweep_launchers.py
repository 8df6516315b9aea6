"""Hydra launcher and sweeper presets (distill/conf/hydra/): they compose, W&B groups a sweep's runs by
its folder, and one real joblib sweep runs end to end and reports (distill-report sweep)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_RUN
from distill.sweep import report_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def compose_with_hydra(overrides: list[str], tmp_path: Path):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="distill.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
            return_hydra_config=True,
        )


def test_joblib_launcher_composes(tmp_path):
    cfg = compose_with_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_preset_composes(tmp_path):
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 240, 1, 1)
    assert launcher.submitit_folder.endswith("/.submitit/%j")


def test_optuna_preset_composes_and_searches_keys_the_quickstart_has(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_with_hydra(["hydra/sweeper=optuna_temperature", "experiment=quickstart"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.storage is None
    assert dict(sweeper.params) == {"loss.temperature": "choice(1, 2, 4, 8)", "loss.terms.kd.weight": "interval(0.1, 0.9)"}
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_wandb_group_is_the_sweep_folder_in_a_multirun_and_null_otherwise(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    cfg = compose_with_hydra(["logger=wandb"], tmp_path)
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group is None  # a single run: no group
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == cfg.hydra.sweep.dir
    assert cfg.logger.wandb.group.startswith(str(tmp_path / "logs" / "multiruns"))


# --- end to end -----------------------------------------------------------------------------------------------


def test_joblib_sweep_reports_and_shares_a_wandb_group(data_dir, tmp_path):
    """`distill -m ... hydra/launcher=joblib` on the tiny models, two temperatures, then the report (~20 s)."""
    env = {
        **os.environ,
        "DISTILL_LOG_DIR": str(tmp_path / "logs"),
        "DISTILL_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb"),
    }
    overrides = [*TINY_RUN, "logger=wandb", "report.save_student=false", "loss.temperature=1,4"]
    result = subprocess.run(
        [sys.executable, "-m", "distill", "-m", *overrides, "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "multiruns").glob("*/*")
    assert "Joblib.Parallel(n_jobs=1" in result.stdout + result.stderr
    report = report_sweep(sweep_dir)
    assert not report.sweep.missing and len(report.sweep.runs) == 2
    assert [(s.label, s.n) for s in report.summary.settings] == [("loss.temperature=1", 1), ("loss.temperature=4", 1)]
    assert all(0.0 <= s.mean <= 1.0 for s in report.summary.settings)
    assert report.plot.read_bytes()[:8] == PNG_MAGIC
    # Each run's offline W&B record holds the sweep folder as its run group (RunRecord.run_group, as encoded).
    from wandb.proto import wandb_internal_pb2

    group_field = wandb_internal_pb2.RunRecord(run_group=str(sweep_dir)).SerializeToString()
    records = sorted(sweep_dir.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(records) == 2
    assert all(group_field in record.read_bytes() for record in records)
