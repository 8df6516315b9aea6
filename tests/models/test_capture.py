"""Tests for distill/models/capture.py: hooks capture the real attention inputs under sdpa."""

import torch
from transformers import BertConfig, BertModel

from distill.losses import scaled_scores
from distill.models import attention_projections, capture_outputs


def test_captured_query_key_reproduce_the_models_attention_probabilities():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, attn_implementation="eager")
    model = BertModel(config).eval()
    inputs = {"input_ids": torch.randint(0, 100, (2, 6)), "attention_mask": torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])}
    modules = attention_projections(model, ["query", "key"])
    assert len(modules["query"]) == 2
    with capture_outputs(modules) as captured:
        output = model(**inputs, output_attentions=True)
    for layer in range(2):
        scores = scaled_scores(captured["query"][layer], captured["key"][layer], 4)
        scores = scores.masked_fill(~inputs["attention_mask"].bool()[:, None, None, :], float("-inf"))
        assert torch.allclose(scores.softmax(-1), output.attentions[layer], atol=1e-5)
    # Hooks are removed after the block.
    assert all(not module._forward_hooks for group in modules.values() for module in group)
