"""Tests for distill/quiet.py: a run's console is free of expected dependency messages by default,
and ``distill -v`` shows them again."""

import pytest
from conftest import TINY_RUN
from test_cli import run_cli
from transformers import BertConfig, BertModel

from distill.cli import verbose_argv

#: Messages every run with a teacher fine-tune printed (issue 20, point 8), each expected and harmless.
EXPECTED_NOISE = {
    "transformers' LOAD REPORT of the fresh head": "LOAD REPORT",
    "Lightning's litlogger tip": "litlogger",
    "Lightning's warning about the fine-tune's missing val_dataloader": "but have no `val_dataloader`",
    "transformers' save progress": "Writing model shards",
}


def _finetune_run(tmp_path, *extra):
    """A tiny run whose teacher is a headless base model, fine-tuned first (the quickstart's path)."""
    base = tmp_path / "base"
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(base)
    args = [*TINY_RUN, "teacher.config=null", f"++teacher.name_or_path={base}", "++teacher.finetune.max_steps=2",
            "callbacks=default", *extra]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_a_run_is_quiet_by_default_and_says_the_fresh_head_in_one_line(data_dir, tmp_path):
    output = _finetune_run(tmp_path)
    shown = [what for what, text in EXPECTED_NOISE.items() if text in output]
    assert shown == [], f"printed by default: {shown}"
    assert "is deprecated" not in output
    (line,) = [line for line in output.splitlines() if "newly initialised" in line]
    assert line.endswith("newly initialised, not in the checkpoint: classifier.bias, classifier.weight")
    # callbacks=default with trainer.enable_progress_bar=false (TINY_RUN): the bar is dropped, not a crash.
    assert "trainer.enable_progress_bar=false: running without StepProgressBar" in output


def test_verbose_shows_the_dependencies_messages_again(data_dir, tmp_path):
    output = _finetune_run(tmp_path, "-v")
    hidden = [what for what, text in EXPECTED_NOISE.items() if text not in output]
    assert hidden == [], f"not shown with -v: {hidden}"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-v", "experiment=quickstart", "--cfg", "job"], ["hydra.verbose=distill", "experiment=quickstart", "--cfg", "job"]),
        (["-v", "-m", "a=1,2"], ["-m", "hydra.verbose=distill", "a=1,2"]),
        (["--verbose", "--cfg", "job"], ["hydra.verbose=distill", "--cfg", "job"]),
        (["-v", "hydra.verbose=true"], ["hydra.verbose=true"]),
        (["a=1"], ["a=1"]),
    ],
)
def test_the_verbose_flag_becomes_an_override_where_hydra_parses_it(args, expected):
    # Hydra's argparse takes the overrides as one run: an override after `--cfg job` is refused.
    assert verbose_argv(args) == expected


@pytest.fixture
def quiet():
    """The filters installed for one test, then removed (warnings, logging filters, transformers' bars)."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    from distill import quiet as quiet_module

    loggers = [
        logging.getLogger(name)
        for name in (*quiet_module._LIGHTNING_LOGGERS, quiet_module._TRANSFORMERS_LOAD_LOGGER, *quiet_module._IMPORT_MESSAGES)
    ]
    before = {logger.name: list(logger.filters) for logger in loggers}
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_module.quiet_expected_messages()
        yield
    for logger in loggers:
        logger.filters[:] = before[logger.name]
    transformers_logging.enable_progress_bar()


def _record(name, message):
    import logging

    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_the_filters_drop_expected_messages_and_keep_problems(quiet):
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    tip = _record("lightning.pytorch.utilities.rank_zero", "💡 Tip: For seamless cloud logging ... litlogger")
    assert not logging.getLogger(tip.name).filter(tip)
    fresh_head = _record("transformers.modeling_utils", "BertForSequenceClassification LOAD REPORT ... MISSING")
    assert not logging.getLogger(fresh_head.name).filter(fresh_head)
    mismatch = _record("transformers.modeling_utils", "BertForSequenceClassification LOAD REPORT ... MISMATCH")
    assert logging.getLogger(mismatch.name).filter(mismatch)  # a checkpoint that does not fit stays loud
    enum = _record("torch.utils._pytree", "<enum 'X'> ... Calling register_constant() on Enum subclasses is deprecated")
    assert not logging.getLogger(enum.name).filter(enum)
    other = _record("torch.utils._pytree", "some other pytree warning")
    assert logging.getLogger(other.name).filter(other)  # only the known message is dropped
    assert not transformers_logging.is_progress_bar_enabled()

    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.")
        warnings.warn("Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer.")
        warnings.warn_explicit("old API", FutureWarning, "_pytree.py", 1, module="lightning.pytorch.utilities._pytree")
        warnings.warn("something else went wrong")  # an unexpected warning is still shown
        warnings.warn_explicit("our own", DeprecationWarning, "module.py", 1, module="distill.module")
    assert [str(w.message) for w in caught] == ["something else went wrong", "our own"]
