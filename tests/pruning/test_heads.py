"""Attention-head pruning: heads found in BERT and Llama, importance equal to a hand computation
(RMS of the head's context; Michel et al.'s head-gate gradient), masks that switch a head off
whatever its weights, and the Llama export that transformers loads with fewer heads and the masked
model's outputs; BERT refused, unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from distill.pruning.heads import (
    HeadsNotRemovable,
    alive_heads,
    attention_blocks,
    head_importance,
    head_masks,
    heads_kept,
    kept_heads,
    shrink_attention_heads,
)
from distill.pruning.masks import MaskSet

from test_structured import _batches, layer_input_tokens


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return BertForSequenceClassification(config).eval()


def _llama(kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, attention_bias=True)
    return LlamaForCausalLM(config).eval()


def _mask(model, keep: int) -> tuple[MaskSet, dict[str, torch.Tensor]]:
    blocks = attention_blocks(model)
    importance = head_importance(model, blocks, _batches())
    masks, kept = MaskSet(), {}
    for block in blocks:
        kept[block.layer] = kept_heads(block, importance[block.layer], keep)
        masks.update(head_masks(model, block, kept[block.layer]))
    masks.apply(model)
    return masks, kept


def test_attention_blocks_are_found_by_name_with_the_configs_head_counts():
    (first, _) = attention_blocks(_bert())
    assert (first.layer, first.query, first.output, first.module) == (
        "bert.encoder.layer.0", "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.0.attention.self",
    )
    assert (first.heads, first.kv_heads, first.head_dim, first.group) == (4, 4, 8, 1)
    (block, _) = attention_blocks(_llama())
    assert (block.query, block.key, block.output) == (
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj",
    )
    assert (block.heads, block.kv_heads, block.head_dim, block.group) == (4, 2, 8, 2)
    assert heads_kept(block, 0.5) == 2 and heads_kept(first, 0.25) == 3


def test_activation_importance_is_the_rms_of_each_heads_context_over_real_tokens():
    model = _bert()
    block = attention_blocks(model)[1]
    context = layer_input_tokens(model, block.output, _batches())  # (tokens, heads * head_dim)
    expected = context.reshape(len(context), 4, 8).square().sum(-1).mean(0).sqrt()
    torch.testing.assert_close(head_importance(model, [block], _batches())[block.layer], expected)


def test_gradient_importance_is_the_head_gate_gradient_of_michel_et_al():
    model = _bert()
    blocks = attention_blocks(model)
    batches = [{**batch, "labels": torch.tensor([0, 1, 1, 0])} for batch in _batches(2)]
    expected = {block.layer: torch.zeros(4) for block in blocks}
    for batch in batches:  # by hand: a gate ξ_h = 1 per example and head, |∂L/∂ξ_h| summed over examples
        gates = {block.layer: torch.ones(4, 1, 4, 1, requires_grad=True) for block in blocks}

        def gate(layer):
            return lambda module, args: ((args[0].unflatten(-1, (4, 8)) * gates[layer]).flatten(-2),)

        handles = [model.get_submodule(b.output).register_forward_pre_hook(gate(b.layer)) for b in blocks]
        loss = torch.nn.functional.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                                                 batch["labels"], reduction="mean")
        for handle in handles:
            handle.remove()
        grads = torch.autograd.grad(loss, [gates[b.layer] for b in blocks])
        for block, grad in zip(blocks, grads):
            expected[block.layer] += grad.reshape(4, 4).abs().sum(0)
    scores = head_importance(model, blocks, batches, "gradient")
    for block in blocks:
        torch.testing.assert_close(scores[block.layer], expected[block.layer], rtol=1e-4, atol=1e-8)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_a_masked_head_contributes_nothing_whatever_its_weights():
    model = _bert()
    masks, kept = _mask(model, keep=2)
    block = attention_blocks(model)[0]
    batch = _batches(1)[0]

    def rows_of(heads):
        return torch.cat([torch.arange(h * 8, (h + 1) * 8) for h in heads.nonzero().flatten().tolist()])

    with torch.no_grad():
        before = model(**batch).logits
        query = model.get_submodule(block.query).weight
        assert (query[rows_of(~kept[block.layer])] == 0).all()
        for name in (block.query, block.key, block.value):  # new weights in the pruned heads' rows: no change
            model.get_submodule(name).weight[rows_of(~kept[block.layer])] = torch.randn(16, 32)
        torch.testing.assert_close(model(**batch).logits, before)
        query[rows_of(kept[block.layer])] = torch.randn(16, 32)  # in a kept head's: the outputs move
        assert not torch.allclose(model(**batch).logits, before)
    masks.apply(model)
    assert (query[rows_of(~kept[block.layer])] == 0).all()
    assert kept[block.layer].sum() == 2 and alive_heads(masks, block).tolist() == kept[block.layer].tolist()


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_the_llama_export_has_fewer_heads_and_computes_what_the_masked_model_did(tmp_path, kv_heads):
    model = _llama(kv_heads)
    _, kept = _mask(model, keep=2)
    if kv_heads == 2:  # grouped keys and values: one query head kept in each group
        assert all(mask.reshape(2, 2).sum(1).tolist() == [1, 1] for mask in kept.values())
    batch = _batches(1)[0]
    with torch.no_grad():
        masked = model(**batch).logits
        assert shrink_attention_heads(model, kept) == 2
        torch.testing.assert_close(model(**batch).logits, masked, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    config = loaded.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, min(kv_heads, 2), 8)
    attention = loaded.model.layers[1].self_attn
    assert attention.q_proj.weight.shape == (16, 32) and attention.o_proj.weight.shape == (32, 16)
    assert attention.k_proj.weight.shape == (16, 32)  # kv 2: kept whole; kv 4: halved with the queries
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, masked, rtol=1e-5, atol=1e-5)


def test_bert_heads_cannot_be_removed_and_the_model_is_left_as_it_was():
    model = _bert()
    _, kept = _mask(model, keep=2)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(HeadsNotRemovable, match="BertConfig has no head_dim"):
        shrink_attention_heads(model, kept)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_uneven_head_counts_and_groups_are_refused():
    model = _llama(2)
    block = attention_blocks(model)[0]
    with pytest.raises(ValueError, match="do not split evenly over 2 key/value groups"):
        kept_heads(block, torch.rand(4), 3)
    kept = {b.layer: kept_heads(b, torch.rand(4), k) for b, k in zip(attention_blocks(model), (2, 4))}
    with pytest.raises(ValueError, match="same number of heads per layer"):
        shrink_attention_heads(model, kept)
