"""Tests for distill/data/mlm.py: DistilBERT masking rates, frequency smoothing, the text corpus module."""

import pytest
import torch

from distill.data.datamodule import DataConfigError
from distill.data.mlm import (
    MaskingCollator,
    TextCorpusDataModule,
    mask_tokens,
    selection_probabilities,
    token_weights,
)


def random_batch(tokenizer, rows=1000, length=200, seed=0):
    """``[CLS] w ... [SEP] [PAD] ...`` rows of non-special tokens, a third of them padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2000, 29000, (rows, length), generator=generator)
    lengths = torch.full((rows,), length)
    lengths[::3] = torch.randint(10, length, (len(lengths[::3]),), generator=generator)
    positions = torch.arange(length)
    attention_mask = (positions[None, :] < lengths[:, None]).long()
    input_ids[:, 0] = tokenizer.cls_token_id
    input_ids[torch.arange(rows), lengths - 1] = tokenizer.sep_token_id
    input_ids[attention_mask == 0] = tokenizer.pad_token_id
    return input_ids, attention_mask


def run_masking(tokenizer, input_ids, attention_mask, weights, seed=0, probability=0.15):
    special = torch.tensor(sorted(tokenizer.all_special_ids))
    random_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in set(special.tolist())])
    return mask_tokens(
        input_ids, attention_mask, weights,
        mlm_probability=probability, mask_token_rate=0.8, random_token_rate=0.1,
        mask_token_id=tokenizer.mask_token_id, random_ids=random_ids,
        generator=torch.Generator().manual_seed(seed),
    )


def test_selected_share_and_80_10_10_split_on_200k_tokens(tokenizer):
    input_ids, attention_mask = random_batch(tokenizer)
    weights = token_weights(torch.zeros(len(tokenizer)), 0.0, tokenizer.all_special_ids)
    masked, labels = run_masking(tokenizer, input_ids, attention_mask, weights)
    special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))
    eligible = attention_mask.bool() & ~special
    selected = labels != -100
    assert int(eligible.sum()) > 150_000
    share = selected.sum() / eligible.sum()
    assert share.item() == pytest.approx(0.15, abs=0.003)
    # Never: special tokens ([CLS], [SEP]) or padding.
    assert not (selected & ~eligible).any()
    # Labels: the original token where selected, -100 elsewhere; unselected inputs untouched.
    assert torch.equal(labels[selected], input_ids[selected])
    assert torch.equal(masked[~selected], input_ids[~selected])
    to_mask = masked[selected] == tokenizer.mask_token_id
    kept = masked[selected] == input_ids[selected]
    to_random = ~to_mask & ~kept
    count = int(selected.sum())
    assert to_mask.sum() / count == pytest.approx(0.8, abs=0.01)
    assert to_random.sum() / count == pytest.approx(0.1, abs=0.01)
    assert kept.sum() / count == pytest.approx(0.1, abs=0.01)
    # Random replacements are ordinary tokens, never [PAD]/[CLS]/[SEP]/[MASK].
    assert not torch.isin(masked[selected][to_random], torch.tensor(tokenizer.all_special_ids)).any()


def test_smoothing_selects_rare_tokens_more_with_the_expected_ratio(tokenizer):
    frequent, rare = 5000, 6000
    counts = torch.zeros(len(tokenizer))
    counts[frequent], counts[rare] = 1000, 100
    weights = token_weights(counts, 0.7, tokenizer.all_special_ids)
    expected_ratio = (1000 / 100) ** 0.7  # 5.01: count^-0.7
    assert (weights[rare] / weights[frequent]).item() == pytest.approx(expected_ratio)
    # 198k frequent and 2k rare tokens: p_frequent ~ 0.144, p_rare ~ 0.72 (nothing saturates).
    input_ids = torch.full((1000, 200), frequent)
    input_ids.view(-1)[torch.randperm(200_000, generator=torch.Generator().manual_seed(1))[:2000]] = rare
    attention_mask = torch.ones_like(input_ids)
    _, labels = run_masking(tokenizer, input_ids, attention_mask, weights, seed=3)
    selected = labels != -100
    p_frequent = selected[input_ids == frequent].float().mean().item()
    p_rare = selected[input_ids == rare].float().mean().item()
    assert p_rare / p_frequent == pytest.approx(expected_ratio, rel=0.05)
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.003)  # the share stays 15%


def test_selection_probabilities_cap_at_one_and_keep_the_budget():
    weights = torch.tensor([100.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    probabilities = selection_probabilities(weights, 0.3)  # budget 0.3 * 10 eligible = 3
    assert probabilities.sum().item() == pytest.approx(3.0)
    assert probabilities[0].item() == 1.0 and probabilities[5].item() == 0.0
    assert probabilities[1:5].tolist() == pytest.approx([2 / 9] * 4)  # the rest shared evenly
    uniform = selection_probabilities(torch.ones(20), 0.15)
    assert uniform.tolist() == pytest.approx([0.15] * 20)


def test_collator_is_seeded_reproducible_and_drops_token_type_ids(tokenizer):
    texts = ["the film is a gripping , funny ride", "a quiet , sad and beautiful story about loss"] * 8
    features = [{"input_ids": tokenizer(text)["input_ids"]} for text in texts]
    collate = lambda seed, fixed=False: MaskingCollator(tokenizer, seed=seed, fixed_masks=fixed, mlm_probability=0.5)  # noqa: E731
    first, again, other = collate(0)(features), collate(0)(features), collate(1)(features)
    assert set(first) == {"input_ids", "attention_mask", "labels"}  # no token_type_ids
    assert torch.equal(first["labels"], again["labels"]) and torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["labels"], other["labels"])
    # Evaluation masks: the same batch gets the same masks on every call (every evaluation).
    fixed = collate(0, fixed=True)
    assert torch.equal(fixed(features)["labels"], fixed(features)["labels"])
    stream = collate(0)
    assert not torch.equal(stream(features)["labels"], stream(features)["labels"])  # training: fresh masks
    plain = MaskingCollator(tokenizer, mlm_probability=0.0, token_type_ids=True)(features)
    assert set(plain) == {"input_ids", "attention_mask", "token_type_ids"}
    assert int(plain["token_type_ids"].sum()) == 0


def write_corpus(tmp_path):
    (tmp_path / "wiki.tokens").write_text("\n = Title = \n\n" + "\n".join(f" paragraph {i} " + "word " * 40 for i in range(6)) + "\n\n \n")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"a short sentence number {i}\t{i % 2}\n" for i in range(10)))
    return tmp_path / "wiki.tokens", tmp_path / "train.tsv"


def test_corpus_reads_lines_and_columns_drops_blanks_truncates_and_packs(tokenizer, tmp_path):
    wiki, tsv = write_corpus(tmp_path)
    sources = [{"file": str(wiki)}, {"file": str(tsv), "text_column": "sentence"}]
    data = TextCorpusDataModule(tokenizer, train_sources=sources, eval_sources=[{"file": str(wiki)}], max_length=16, batch_size=4).prepare()
    assert len(data.train_dataset) == 7 + 10  # title + 6 paragraphs, 10 sentences; blank lines dropped
    assert max(data.train_lengths) == 16
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert data.weights[tokenizer.cls_token_id] == 0 and data.weights[tokenizer.convert_tokens_to_ids("word")] < data.weights[tokenizer.convert_tokens_to_ids("title")]
    packed = TextCorpusDataModule(tokenizer, train_sources=sources, eval_sources=[{"file": str(wiki)}], max_length=16, pack=True, mlm_probability=0).prepare()
    lengths = [len(ids) for ids in packed.train_dataset["input_ids"]]
    assert set(lengths[:-1]) == {16} and lengths[-1] <= 16
    assert sum(length - 2 for length in lengths) == sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in
                                                        [" = Title = ", *[f" paragraph {i} " + "word " * 40 for i in range(6)], *[f"a short sentence number {i}" for i in range(10)]])
    assert set(next(iter(packed.val_dataloader()))) == {"input_ids", "attention_mask"}


def test_corpus_config_errors_name_the_field(tokenizer, tmp_path):
    wiki, tsv = write_corpus(tmp_path)
    with pytest.raises(DataConfigError) as raised:
        TextCorpusDataModule(
            tokenizer,
            train_sources=[{"file": str(tmp_path / "missing.txt")}, {"file": str(tsv), "text_column": "text"}, {"fiel": "x"}],
            eval_sources=[{"file": str(wiki)}],
            mask_token_rate=0.95,
        ).prepare()
    problems = "\n".join(raised.value.problems)
    assert "data.train_sources[2]: unknown keys ['fiel']" in problems
    assert "data.mask_token_rate + data.random_token_rate" in problems
    with pytest.raises(DataConfigError) as raised:
        TextCorpusDataModule(
            tokenizer,
            train_sources=[{"file": str(tmp_path / "missing.txt")}, {"file": str(tsv), "text_column": "text"}],
            eval_sources=[{"file": str(wiki)}],
        ).prepare()
    problems = "\n".join(raised.value.problems)
    assert "data.train_sources[0].file=" in problems and "missing.txt" in problems
    assert "data.train_sources[1].text_column='text' is not a column" in problems and "sentence" in problems
