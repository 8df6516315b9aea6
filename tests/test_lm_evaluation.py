"""distill.lm_evaluation: perplexity, teacher agreement and accuracy by frequency decile, greedy samples."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from distill.lm_evaluation import (
    TokenDeciles,
    evaluate_causal_lm,
    greedy_samples,
    samples_markdown,
    shifted_targets,
    token_frequency_deciles,
)

VOCAB = 64


def tiny_llama(vocab_size: int = VOCAB, seed: int = 0, hidden: int = 32, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


def padded_copy(model: LlamaForCausalLM, extra: int = 8, huge: float = 1e4) -> LlamaForCausalLM:
    """The same model with ``extra`` padding logits (vocab 64 → 72) that are always ``huge``."""
    padded = tiny_llama(vocab_size=model.config.vocab_size + extra, seed=1)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in padded.state_dict().items():
            tensor[: state[name].shape[0]].copy_(state[name])

    def pad_logits(module, inputs, output):
        output[..., -extra:] = huge
        return output

    padded.lm_head.register_forward_hook(pad_logits)
    return padded


def make_batch(seed: int = 0, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Right padding (-100 labels) and prompt tokens (-100 labels) in every row but the last."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, 8:] = 0
    attention_mask[1, 10:] = 0
    input_ids[attention_mask == 0] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[0, :3] = -100  # prompt
    labels[1, :5] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def reference(model, batch, vocab_size: int = VOCAB):
    """Per-token NLL and argmax with the shift written out, independently of the module."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab_size]
    flat_logits, flat_labels = logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten()
    mean_nll = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    keep = flat_labels != -100
    return mean_nll, flat_logits[keep].argmax(-1), flat_labels[keep]


def uniform_counts() -> torch.Tensor:
    return torch.arange(VOCAB)  # token id i seen i times: rarer ids are smaller


def test_perplexity_is_exp_of_the_shifted_mean_nll_without_ignored_positions():
    model, batch = tiny_llama(), make_batch()
    mean_nll, top, targets = reference(model, batch)
    result = evaluate_causal_lm(model, None, [batch], uniform_counts())
    assert result.tokens == int((batch["labels"][:, 1:] != -100).sum()) == targets.numel() < 3 * 11
    assert result.student_nll == pytest.approx(float(mean_nll), rel=1e-5)
    assert result.student_perplexity == pytest.approx(math.exp(float(mean_nll)), rel=1e-5)
    assert result.student_accuracy == pytest.approx(float((top == targets).float().mean()))
    assert result.teacher_perplexity is None and result.agreement is None
    # two batches of unequal size: means are per token, not per batch
    halves = [{key: value[:1] for key, value in batch.items()}, {key: value[1:] for key, value in batch.items()}]
    split = evaluate_causal_lm(model, None, halves, uniform_counts())
    assert split.tokens == result.tokens
    assert split.student_perplexity == pytest.approx(result.student_perplexity, rel=1e-5)


def test_shifted_targets_pairs_position_t_with_label_t_plus_1():
    logits = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)  # row value = flat position
    labels = torch.tensor([[-100, 5, -100, 7], [-100, -100, 9, -100]])
    rows, targets = shifted_targets(logits, labels)
    assert rows.squeeze(-1).tolist() == [0.0, 2.0, 5.0]
    assert targets.tolist() == [5, 7, 9]
    left_padded = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    rows, targets = shifted_targets(logits, torch.tensor([[1, 2, 3, 4], [-100, 6, 7, 8]]), left_padded)
    assert rows.squeeze(-1).tolist() == [0.0, 1.0, 2.0, 5.0, 6.0]  # the pad at (1, 0) predicts nothing


def test_model_against_itself_agrees_everywhere():
    model = tiny_llama()
    result = evaluate_causal_lm(model, model, [make_batch(0), make_batch(1)], uniform_counts())
    assert result.agreement == result.agreement_rare_decile == result.agreement_frequent_decile == 1.0
    assert result.teacher_perplexity == result.student_perplexity
    assert result.teacher_accuracy == result.student_accuracy
    summary = result.as_dict()
    json.dumps(summary)
    for key in (
        "tokens", "student_perplexity", "teacher_perplexity", "student_nll", "agreement",
        "agreement_rare_decile", "agreement_frequent_decile", "student_accuracy",
        "student_accuracy_rare_decile", "student_accuracy_frequent_decile",
    ):  # fmt: skip
        assert key in summary


def partly_greedy_batch(model) -> dict[str, torch.Tensor]:
    """Random 4-token prompts continued greedily by ``model``: it is right on those 8 next tokens."""
    prompts = torch.randint(3, VOCAB, (3, 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        input_ids = model.generate(prompts, do_sample=False, max_new_tokens=8, min_new_tokens=8)
    labels = input_ids.clone()
    labels[0, :2] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def perturbed(model: LlamaForCausalLM, scale: float = 0.01, seed: int = 7) -> LlamaForCausalLM:
    """A copy with a little noise on every weight: it agrees with ``model`` on some tokens, not all."""
    copy = tiny_llama(seed=seed)
    copy.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in copy.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return copy


def test_decile_scores_use_the_positions_of_the_rarest_and_most_frequent_targets():
    student = tiny_llama(seed=0)
    teacher = perturbed(student)
    batches = [partly_greedy_batch(student), make_batch()]
    counts = torch.randint(0, 5, (VOCAB,), generator=torch.Generator().manual_seed(2))
    result = evaluate_causal_lm(student, teacher, batches, counts)
    student_top, teacher_top, targets = [], [], []
    for batch in batches:
        _, top, target = reference(student, batch)
        student_top.append(top)
        targets.append(target)
        teacher_top.append(reference(teacher, batch)[1])
    student_top, teacher_top, targets = torch.cat(student_top), torch.cat(teacher_top), torch.cat(targets)
    decile = TokenDeciles(counts).decile_of(targets)
    agree, correct = (student_top == teacher_top).float(), (student_top == targets).float()
    assert result.agreement == pytest.approx(float(agree.mean()))
    assert result.agreement_rare_decile == pytest.approx(float(agree[decile == 0].mean()))
    assert result.agreement_frequent_decile == pytest.approx(float(agree[decile == 9].mean()))
    assert result.student_accuracy_rare_decile == pytest.approx(float(correct[decile == 0].mean()))
    assert result.student_accuracy_frequent_decile == pytest.approx(float(correct[decile == 9].mean()))
    teacher_correct = (teacher_top == targets).float()
    assert result.teacher_accuracy_rare_decile == pytest.approx(float(teacher_correct[decile == 0].mean()))
    assert 0.0 < result.agreement < 1.0  # different random models: the checks above are not vacuous
    assert 0.0 < result.student_accuracy < 1.0
    assert result.student_accuracy == pytest.approx(float(correct.mean()))


def test_deciles_rank_by_count_then_token_id_then_position():
    counts = torch.tensor([5, 0, 3, 3, 9, 1, 7, 2, 8, 4])
    # 20 target positions -> 2 per decile
    targets = torch.tensor([4, 3, 2, 0, 6, 8, 5, 1, 9, 7, 3, 2, 4, 1, 0, 6, 8, 9, 7, 5])
    decile = TokenDeciles(counts).decile_of(targets)
    assert torch.nonzero(decile == 0).flatten().tolist() == [7, 13]  # token 1, count 0
    assert torch.nonzero(decile == 1).flatten().tolist() == [6, 19]  # token 5, count 1
    assert torch.nonzero(decile == 2).flatten().tolist() == [9, 18]  # token 7, count 2
    # count 3 is shared by tokens 2 (positions 2, 11) and 3 (positions 1, 10): token 2 ranks first
    assert torch.nonzero(decile == 3).flatten().tolist() == [2, 11]
    assert torch.nonzero(decile == 4).flatten().tolist() == [1, 10]
    assert torch.nonzero(decile == 9).flatten().tolist() == [0, 12]  # token 4, count 9
    assert torch.bincount(decile, minlength=10).tolist() == [2] * 10
    # a tie within one token id splits by position; unequal sizes follow np.array_split
    same = TokenDeciles(torch.tensor([1, 1])).decile_of(torch.zeros(25, dtype=torch.long))
    assert same.tolist() == [d for d, size in enumerate([3] * 5 + [2] * 5) for _ in range(size)]
    assert torch.equal(TokenDeciles(counts).decile_of(targets), decile)  # deterministic
    with pytest.raises(ValueError):
        TokenDeciles(counts).decile_of(torch.tensor([10]))


def test_token_frequency_deciles_counts_lists_and_tensors():
    deciles = token_frequency_deciles([[1, 2, 2], torch.tensor([[2, 5], [-100, 1]])], vocab_size=6)
    assert deciles.counts.tolist() == [0, 2, 3, 0, 0, 1]
    assert deciles.counts.dtype == torch.long
    with pytest.raises(ValueError):
        token_frequency_deciles([[6]], vocab_size=6)


def test_padded_vocab_compares_only_the_shared_logits():
    teacher = tiny_llama()
    student = padded_copy(teacher)
    batch = make_batch()
    with torch.no_grad():
        padded_logits = student(input_ids=batch["input_ids"]).logits
    assert padded_logits.shape[-1] == 72 and bool((padded_logits[..., 64:] == 1e4).all())
    mean_nll, _, _ = reference(teacher, batch)
    for vocab_size in (64, None):  # None: the smaller width of the two
        result = evaluate_causal_lm(student, teacher, [batch], uniform_counts(), vocab_size=vocab_size)
        assert result.vocab_size == 64
        assert result.agreement == result.agreement_rare_decile == result.agreement_frequent_decile == 1.0
        assert result.student_perplexity == pytest.approx(math.exp(float(mean_nll)), rel=1e-5)
        assert result.student_perplexity == pytest.approx(result.teacher_perplexity, rel=1e-5)
    # over all 72 logits the padding would win every argmax and swamp the softmax
    alone = evaluate_causal_lm(student, None, [batch], uniform_counts())
    assert alone.vocab_size == 72 and alone.student_accuracy == 0.0 and alone.student_nll > 1000
    assert alone.student_perplexity == math.inf
    with pytest.raises(ValueError):
        evaluate_causal_lm(student, teacher, [batch], uniform_counts(), vocab_size=72)


def test_evaluation_restores_training_mode_and_rejects_empty_sets():
    model = tiny_llama().train()
    evaluate_causal_lm(model, None, [make_batch()], uniform_counts())
    assert model.training
    empty = make_batch()
    empty["labels"][:] = -100
    with pytest.raises(ValueError, match="no target positions"):
        evaluate_causal_lm(model, None, [empty], uniform_counts())


@pytest.fixture(scope="module")
def lm_pair(tokenizer):
    common = {"vocab_size": len(tokenizer), "hidden": 16, "pad_token_id": tokenizer.pad_token_id}
    return {"teacher": tiny_llama(seed=0, **common), "student": tiny_llama(seed=1, **common)}


def test_greedy_samples_match_generate(tokenizer, lm_pair):
    prompts = ["the cat sat on", "a | b\nc"]
    samples = greedy_samples(lm_pair, tokenizer, prompts, max_new_tokens=6)
    assert [sample["prompt"] for sample in samples] == prompts
    for sample in samples:
        assert set(sample) == {"prompt", "teacher", "student"}
        encoded = tokenizer(sample["prompt"], return_tensors="pt", return_token_type_ids=False)
        for name, model in lm_pair.items():
            expected = model.generate(**encoded, do_sample=False, max_new_tokens=6)
            new = expected[0, encoded["input_ids"].shape[1] :]
            assert sample[name] == tokenizer.decode(new, skip_special_tokens=True)
            ids = encoded["input_ids"]  # and the same by hand: argmax, token after token
            for _ in range(new.numel()):
                with torch.no_grad():
                    ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
            assert torch.equal(ids[0, encoded["input_ids"].shape[1] :], new)
    assert samples[0]["teacher"] != samples[0]["student"]  # different models, so the columns are theirs
    assert greedy_samples(lm_pair, tokenizer, prompts, max_new_tokens=6) == samples  # deterministic


def test_greedy_samples_never_pick_padding_ids(tokenizer, lm_pair):
    model = lm_pair["student"]
    encoded = tokenizer("the cat sat on", return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        first = int(model(**encoded).logits[0, -1].argmax())
    limited = greedy_samples({"student": model}, tokenizer, ["the cat sat on"], 1, vocab_size=first)
    assert limited[0]["student"] != greedy_samples({"student": model}, tokenizer, ["the cat sat on"], 1)[0]["student"]


def test_samples_markdown_holds_each_prompt_and_escapes_pipes_and_newlines():
    samples = [
        {"prompt": "a | b", "teacher": "line one\nline two", "student": "x"},
        {"prompt": "second prompt", "teacher": "t", "student": "s|s"},
    ]
    text = samples_markdown(samples)
    lines = text.strip().splitlines()
    assert lines[0] == "| prompt | teacher | student |"
    assert len(lines) == 2 + len(samples)  # newlines inside cells do not break rows
    assert "a \\| b" in text and "second prompt" in text and "s\\|s" in text
    assert "line one<br>line two" in text
    for line in lines:  # every row has exactly the header's columns (unescaped pipes)
        assert line.replace("\\|", "").count("|") == 4
