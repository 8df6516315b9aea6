"""What a run leaves on disk and says at its end: where it saved (paths printed), files others can
read (umask modes), class names in the saved student, no folder for a refused run, and checkpoints
sized for sweeps (distill/train.py, distill/cli.py, distill/run_folder.py, distill/checkpoints.py,
distill/conf/data/, distill/conf/callbacks/default.yaml)."""

import re
import stat
from pathlib import Path

from conftest import TINY_RUN, compose
from test_cli import CONF_DIR

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
        match = re.search(rf"^(?:\[.*\] - )?\s*{name}:\s+(\S+)", output, re.MULTILINE)
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
