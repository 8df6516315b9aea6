"""FFN neuron pruning: the masks switch whole neurons off, the shrunk model computes what the masked
one did, and transformers loads the export with the smaller intermediate_size."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from distill.pruning.masks import MaskSet
from distill.pruning.structured import feed_forwards, kept_neurons, neuron_importance, neuron_masks, shrink_feed_forwards


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return BertForSequenceClassification(config).eval()


def _batches(count: int = 3, vocab: int = 100) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        ids = torch.randint(5, vocab, (4, 12), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0  # padding: left out of the importance
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def layer_input_tokens(model, name: str, batches) -> torch.Tensor:
    """What the module ``name`` reads at the real (unpadded) token positions of ``batches``, by hand."""
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    handle.remove()
    return torch.cat([inputs[batch["attention_mask"].bool()] for inputs, batch in zip(seen, batches)])


def _mask_half(model) -> tuple[MaskSet, dict[str, torch.Tensor]]:
    ffns = feed_forwards(model)
    importance = neuron_importance(model, ffns, _batches())
    masks, kept = MaskSet(), {}
    for ffn in ffns:
        kept[ffn.layer] = kept_neurons(importance[ffn.layer], 24)
        masks.update(neuron_masks(model, ffn, kept[ffn.layer]))
    masks.apply(model)
    return masks, kept


def test_feed_forwards_are_found_by_shape_in_bert_and_llama():
    ffns = feed_forwards(_bert())
    assert [(f.layer, f.up, f.down) for f in ffns] == [
        (f"bert.encoder.layer.{i}", [f"bert.encoder.layer.{i}.intermediate.dense"], f"bert.encoder.layer.{i}.output.dense")
        for i in range(2)
    ]
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    (ffn,) = feed_forwards(llama)
    assert sorted(ffn.up) == ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    assert ffn.down == "model.layers.0.mlp.down_proj"


def test_importance_is_the_rms_activation_at_the_down_projection_over_real_tokens():
    model = _bert()
    ffn = feed_forwards(model)[0]
    batches = _batches()
    expected = layer_input_tokens(model, ffn.down, batches).square().mean(0).sqrt()
    torch.testing.assert_close(neuron_importance(model, [ffn], batches)[ffn.layer], expected)


def test_the_shrunk_model_computes_what_the_masked_one_did_and_loads_in_transformers(tmp_path):
    model = _bert()
    masks, kept = _mask_half(model)
    down = model.get_submodule("bert.encoder.layer.0.output.dense")
    assert int((down.weight.abs().sum(0) == 0).sum()) == 64 - 24  # whole input columns switched off
    batch = _batches(1)[0]
    with torch.no_grad():
        masked = model(**batch).logits
        assert shrink_feed_forwards(model, kept) == 24
        shrunk = model(**batch).logits
    torch.testing.assert_close(shrunk, masked, rtol=1e-5, atol=1e-6)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.intermediate_size == 24
    assert loaded.bert.encoder.layer[1].intermediate.dense.weight.shape == (24, 32)
    assert loaded.bert.encoder.layer[1].output.dense.weight.shape == (32, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, masked, rtol=1e-5, atol=1e-6)


def test_uneven_widths_are_refused():
    model = _bert()
    kept = {f.layer: kept_neurons(torch.rand(64), k) for f, k in zip(feed_forwards(model), (24, 32))}
    try:
        shrink_feed_forwards(model, kept)
    except ValueError as error:
        assert "same number of neurons per layer" in str(error)
    else:
        raise AssertionError("uneven FFN widths were not refused")


def test_gradient_importance_is_the_per_example_taylor_term_by_hand_and_leaves_parameter_grads_alone():
    from distill.pruning.structured import neuron_gradient_importance

    model = _bert()
    ffn = feed_forwards(model)[1]
    batches = [{**batch, "labels": torch.tensor([0, 1, 1, 0])} for batch in _batches(2)]
    expected = torch.zeros(64)
    for batch in batches:  # by hand: keep the down projection's input, differentiate the loss w.r.t. it
        kept = []
        handle = model.get_submodule(ffn.down).register_forward_hook(lambda m, args, out: kept.append(args[0]))
        loss = model(**batch).loss
        handle.remove()
        (grad,) = torch.autograd.grad(loss, kept)
        product = kept[0] * grad * batch["attention_mask"][..., None]
        expected += product.sum(1).abs().sum(0).detach()
    model.zero_grad(set_to_none=True)
    scores = neuron_gradient_importance(model, [ffn], batches)
    torch.testing.assert_close(scores[ffn.layer], expected, rtol=1e-4, atol=1e-7)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not torch.equal(scores[ffn.layer].argsort(), neuron_importance(model, [ffn], batches)[ffn.layer].argsort())
