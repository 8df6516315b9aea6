"""Every experiment YAML runs: composed, validated, and trained for one step with its own models
and data (``trainer.fast_dev_run``), so a broken experiment fails CI rather than a user's run.

The ``*_hub`` experiments need the Hugging Face hub (bert-base-uncased, hub data): they are only
composed and checked from the config alone (tests/test_cli.py, every experiment).
"""

import json
from pathlib import Path

import pytest

from conftest import compose, tiny_bert
from distill.train import train

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "distill" / "conf" / "experiment").glob("*.yaml"))
HUB_EXPERIMENTS = [name for name in EXPERIMENTS if name.endswith("_hub")]
#: The sst2_{qat,ptq,gptq,awq,smoothquant}_* experiments are the quickstart with one compress preset
#: each. One per code path trains here (torchao int8 fake-quant with activations, BitNet ternary,
#: GPTQ); the others differ from these only in their preset's fields, which tests/test_cli.py
#: validates for every experiment, tests/quantization/ runs every format on tiny models, and
#: tests/callbacks/test_quantization.py trains the AWQ and SmoothQuant presets on a tiny student.
#: sst2_qat_int2_from_fp32 needs a trained student's folder: it trains below on a tiny saved one
#: (sst2_qat_ternary_from_fp32 is it with the ternary preset).
#: Of the pruning experiments, FFN removal trains here; gradual magnitude, 2:4 Wanda and FFN removal
#: on tiny models are what tests/callbacks/test_pruning.py and tests/test_ddp.py train (sst2_minitron
#: differs from sst2_prune_ffn50 in its student's layer list and the preset's fields, which
#: tests/test_cli.py validates; head pruning trains in tests/callbacks/test_structured_pruning.py).
COMPRESS_PATHS = {"sst2_qat_int8", "sst2_qat_ternary", "sst2_gptq_int2", "sst2_prune_ffn50"}
SAME_PATH = [name for name in EXPERIMENTS if name.startswith(("sst2_qat_", "sst2_ptq_", "sst2_gptq_", "sst2_awq_", "sst2_smoothquant_", "sst2_prune"))
             and name not in COMPRESS_PATHS]

#: Small budgets on the experiments' own models: one training and one validation batch, teachers
#: fine-tuned for 2 steps, a few examples, no latency measurement.
QUICK = ["trainer.fast_dev_run=true", "data.train_limit=64", "data.eval_limit=16", "report.latency_repeats=0"]
TEACHER_FINETUNE = {
    "multi_teacher": ["teachers.a.model.finetune.max_steps=2", "teachers.b.model.finetune.max_steps=2"],
    "distilbert_general": [],
    "distilbert_teacher": [],
}


#: The SmolLM2 experiments run in tests/test_causal_lm.py, with tiny Llamas in the real models' place.
LM_EXPERIMENTS = ["smollm2_token_kd", "smollm2_seq_kd"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [name for name in EXPERIMENTS if name not in HUB_EXPERIMENTS + SAME_PATH + LM_EXPERIMENTS])
def test_experiment_trains_one_step(experiment, data_dir, tmp_path):
    finetune = TEACHER_FINETUNE.get(experiment, ["teacher.finetune.max_steps=2"])
    cfg = compose([f"experiment={experiment}", *QUICK, *finetune], tmp_path)
    summary = train(cfg)
    assert summary["metric"] in summary["student"]
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_qat_from_a_trained_student_is_taught_by_its_fp32_copy(tokenizer, data_dir, tmp_path):
    """sst2_qat_int2_from_fp32: the student folder is also the teacher (same widths: hidden states
    matched without a projection), fake-quant from step 0, and the export is the quantized student."""
    folder = tmp_path / "fp32_student"
    tiny_bert(num_layers=2, dropout=0.0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = compose(["experiment=sst2_qat_int2_from_fp32", f"student.name_or_path={folder}", *QUICK], tmp_path)
    assert cfg.teacher.name_or_path == str(folder) and cfg.teacher.finetune is None
    summary = train(cfg)
    assert summary["metric"] in summary["student"] and summary["metric"] in summary["teacher"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["student"]["compression"]["format"] == "int2 g32 sym, emb int8"
    assert metrics["student"]["compression"]["method"] == "qat-range"  # learned scales
    assert set(metrics["examples_seen"]) == {"kd", "ce", "hidden"}
