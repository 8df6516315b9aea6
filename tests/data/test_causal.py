"""CausalTextDataModule: packed blocks, per-text examples, prompt / completion masks, refusals."""

from __future__ import annotations

import pytest
import torch

from distill.data import CausalTextDataModule, DataConfigError, TextCorpusDataModule
from distill.data.causal import CausalLMCollator
from distill.losses import LossInputs, ModelOutputs


@pytest.fixture
def gpt_like(tokenizer):
    """The MiniLM tokenizer with [SEP] standing in as the end-of-text token a causal LM has."""
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.eos_token = tokenizer.sep_token
    return tokenizer


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_packing_joins_texts_with_eos_and_cuts_full_blocks(gpt_like, tmp_path):
    texts = ["the cat sat on the mat", "", "a dog barked at the moon all night long", "short one"]
    train = write(tmp_path, "train.txt", "\n".join(texts) + "\n")
    data = CausalTextDataModule(gpt_like, train_sources=[{"file": train}], eval_sources=[{"file": train}],
                                max_length=5, batch_size=2, shuffle=False).prepare()
    stream = [t for text in texts if text for t in gpt_like(text, add_special_tokens=False)["input_ids"] + [gpt_like.eos_token_id]]
    blocks = data.train_dataset["input_ids"]
    assert [t for block in blocks for t in block] == stream  # nothing lost, nothing added
    assert all(len(block) == 5 for block in blocks[:-1]) and 1 <= len(blocks[-1]) <= 5
    batch = next(iter(data.train_dataloader()))
    assert torch.equal(batch["labels"][batch["attention_mask"].bool()], batch["input_ids"][batch["attention_mask"].bool()])
    assert (batch["labels"][~batch["attention_mask"].bool()] == -100).all()
    assert int(data.token_counts.sum()) == len(stream)  # every scored training token counted once


def test_prompt_tokens_and_padding_are_not_scored(gpt_like, tmp_path):
    rows = "prompt\tcompletion\nthe capital of france is\tparis .\nonce upon a\ttime there was a king\n"
    train = write(tmp_path, "pairs.tsv", rows)
    data = CausalTextDataModule(gpt_like, train_sources=[{"file": train, "text_column": "prompt",
                                                          "completion_column": "completion"}],
                                eval_sources=[{"file": train, "text_column": "prompt", "completion_column": "completion"}],
                                max_length=32, batch_size=2, shuffle=False).prepare()
    batch = next(iter(data.val_dataloader()))
    for row, (prompt, completion) in enumerate([("the capital of france is", "paris ."),
                                                ("once upon a", "time there was a king")]):
        prompt_ids = gpt_like(prompt)["input_ids"]
        target = gpt_like(completion, add_special_tokens=False)["input_ids"] + [gpt_like.eos_token_id]
        length = len(prompt_ids) + len(target)
        assert batch["input_ids"][row, :length].tolist() == prompt_ids + target
        assert (batch["labels"][row, : len(prompt_ids)] == -100).all()
        assert batch["labels"][row, len(prompt_ids) : length].tolist() == target
        assert (batch["labels"][row, length:] == -100).all()


def test_next_token_rows_pair_each_position_with_the_following_label():
    labels = torch.tensor([[-100, -100, 7, 8, -100], [3, 4, 5, 6, 9]])  # row 0: 2 prompt tokens, 1 pad
    logits = torch.randn(2, 5, 12)
    teacher = torch.randn(2, 5, 14)  # a padded vocabulary: 14 rows for the tokenizer's 12
    inputs = LossInputs.for_next_tokens(ModelOutputs(logits), ModelOutputs(teacher), labels,
                                        torch.ones(2, 5), vocab_size=12)
    # position t predicts label t + 1: row 0 scores positions 1 (-> 7) and 2 (-> 8); row 1 all four
    expected = [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert inputs.labels.tolist() == [7, 8, 4, 5, 6, 9]
    assert torch.equal(inputs.student.logits, torch.stack([logits[b, t] for b, t in expected]))
    assert torch.equal(inputs.teacher.logits, torch.stack([teacher[b, t, :12] for b, t in expected]))


def test_completion_columns_belong_to_causal_data_only(tokenizer, tmp_path):
    train = write(tmp_path, "pairs.tsv", "prompt\tcompletion\na\tb\n")
    source = {"file": train, "text_column": "prompt", "completion_column": "completion"}
    masked = TextCorpusDataModule(tokenizer, train_sources=[source], eval_sources=[source])
    assert any("completion_column='completion': prompt / completion data is for task=causal_lm" in p
               for p in masked.check())
    missing = CausalTextDataModule(tokenizer, train_sources=[{**source, "completion_column": "answer"}],
                                   eval_sources=[source])
    with pytest.raises(DataConfigError, match=r"completion_column='answer' is not a column"):
        missing.prepare()


def test_collator_pads_with_eos_when_the_tokenizer_has_no_pad_token(gpt_like):
    gpt_like.pad_token = None
    batch = CausalLMCollator(gpt_like)([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert batch["input_ids"][1].tolist() == [8, gpt_like.eos_token_id, gpt_like.eos_token_id]
    assert batch["labels"][1].tolist() == [8, -100, -100]
