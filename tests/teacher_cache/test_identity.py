"""What a cache is keyed on: the teacher's weights, the tokenized examples, the storage settings."""

from __future__ import annotations

import datasets
import torch

from conftest import tiny_bert
from distill.teacher_cache import CacheIdentity, tokens_sha256, weights_sha256


def test_the_weights_hash_sees_one_changed_weight_and_the_dtype():
    model = tiny_bert(num_layers=1)
    reference = weights_sha256(model)
    assert weights_sha256(tiny_bert(num_layers=1)) == reference  # same seed, same weights
    with torch.no_grad():
        model.classifier.weight[0, 0] += 1e-6
    assert weights_sha256(model) != reference
    assert weights_sha256(tiny_bert(num_layers=1).half()) != reference


def tokenized(tokenizer, max_length: int, texts=("a fine film", "dull and long , far too long")):
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({**encoded, "labels": [0, 1], "example_index": [0, 1]})


def test_the_tokens_hash_sees_max_length_and_text_but_not_labels(tokenizer):
    reference = tokens_sha256(tokenized(tokenizer, 64))
    assert tokens_sha256(tokenized(tokenizer, 4)) != reference
    assert tokens_sha256(tokenized(tokenizer, 64, ("a fine film", "dull"))) != reference
    relabeled = tokenized(tokenizer, 64).map(lambda row: {"labels": 1 - row["labels"]})
    assert tokens_sha256(relabeled) == reference
    assert tokens_sha256(tokenized(tokenizer, 64).select([0, 1])) == reference  # an index mapping reads the same rows


def identity(teacher="a" * 64, examples=10, tokens="b" * 64, max_length=66, dtype="float16"):
    return CacheIdentity(
        teacher, {"train": {"examples": examples, "tokens_sha256": tokens}}, {"dtype": dtype, "logits": "full"},
        about={"teacher": {"name_or_path": "teacher-x"}, "max_length": max_length, "tokenizer": "tok",
               "sources": {"train": "tsv file /data/train.tsv"}},
    )


def test_mismatches_name_what_differs():
    reference = identity()
    assert reference.mismatches(identity()) == []
    assert reference.key() == identity().key()
    (reason,) = reference.mismatches(identity(teacher="c" * 64))
    assert reason.startswith("other teacher") and "cccccccccccc" in reason
    (reason,) = reference.mismatches(identity(tokens="e" * 64, max_length=128))
    assert "other train data" in reason and "data.max_length: 128 in the cache, 66 here" in reason
    (reason,) = reference.mismatches(identity(examples=8, tokens="e" * 64))
    assert "8 examples in the cache, 10 in this run" in reason
    (reason,) = reference.mismatches(identity(dtype="float32"))
    assert "teacher_cache.dtype='float32' in the cache, 'float16' in this run" in reason
    assert len({identity().key(), identity(dtype="float32").key(), identity(teacher="c" * 64).key()}) == 3
