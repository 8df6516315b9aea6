"""Structured pruning of attention heads: the same number of heads in every layer switched off by
masks during training, and removed at export where the model's config can say so.

Head ``h`` of a layer is the ``head_dim`` output rows ``[h·d, (h+1)·d)`` of the query projection
(and, with one key/value head per query head, of the key and value projections) and the same input
columns of the output projection. Masking the output projection's columns removes the head's
contribution exactly (the softmax of a zeroed query is uniform, not zero, so the query rows alone
would not); the query, key and value rows are masked too, so the removed rows hold zeros.

With grouped-query attention (Ainslie et al. 2023; Llama, SmolLM2: ``num_key_value_heads`` <
``num_attention_heads``) query heads are pruned evenly within each key/value group and the key and
value heads stay, so the model keeps one ``num_attention_heads // num_key_value_heads``.

Importance (:mod:`distill.pruning.importance`) is read at the output projection's input, the
heads' concatenated context vectors, ``head_dim`` features per head: ``activation`` (RMS of the
head's context) or ``gradient`` (Michel et al. 2019, arXiv:1905.10650: ``Σ_x |∂L/∂ξ_h|`` for a gate
``ξ_h`` on the head, which is ``Σ_x |Σ_t Σ_{j∈h} a_tj ∂L/∂a_tj|``).

Export: a config with a ``head_dim`` field (Llama and its kin) expresses fewer heads of the same
size, so the rows and columns are removed and ``num_attention_heads`` set; BERT's derives the head
size from ``hidden_size / num_attention_heads`` (transformers 5 also dropped ``prune_heads``), so a
BERT student keeps its masks: zero rows in a model of the original shape, never a smaller model
that computes something else (:class:`HeadsNotRemovable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.pruning.importance import rms_importance, taylor_importance
from distill.pruning.masks import kept_count
from distill.pruning.structured import LAYER_PREFIX, slice_linear

#: The projections of an attention block, by the end of their names within a layer (BERT; Llama,
#: Mistral, Qwen2 and other Llama-style models).
ROLES = {
    "query": ("attention.self.query", "self_attn.q_proj"),
    "key": ("attention.self.key", "self_attn.k_proj"),
    "value": ("attention.self.value", "self_attn.v_proj"),
    "output": ("attention.output.dense", "self_attn.o_proj"),
}
#: Attributes of an attention module that hold a head count (set when heads are removed in place).
HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_attention_heads")


class HeadsNotRemovable(ValueError):
    """The model's config cannot express fewer attention heads of the same size."""


@dataclass
class Attention:
    """One layer's attention block: its projections' names and head counts."""

    layer: str
    query: str
    key: str
    value: str
    output: str
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads

    @property
    def module(self) -> str:
        """The attention module: the query projection's parent (BERT: ``attention.self``)."""
        return self.query.rsplit(".", 1)[0]


def head_shape(model: nn.Module) -> tuple[int, int, int]:
    """``(num_attention_heads, num_key_value_heads, head_dim)`` from the model's config."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise ValueError(f"{type(model).__name__}: its config has no num_attention_heads; head pruning needs one")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def attention_blocks(model: nn.Module) -> list[Attention]:
    """Every layer's attention block, found by name (:data:`ROLES`) and checked against the config's
    head counts; a model whose attention is laid out otherwise is refused by name."""
    heads, kv_heads, head_dim = head_shape(model)
    found: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        match = LAYER_PREFIX.match(name)
        if not isinstance(module, nn.Linear) or match is None:
            continue
        rest = name[len(match.group(0)):]
        for role, endings in ROLES.items():
            if rest in endings:
                found.setdefault(match.group(1), {})[role] = name
    widths = {"query": ("out_features", heads), "key": ("out_features", kv_heads),
              "value": ("out_features", kv_heads), "output": ("in_features", heads)}
    blocks, problems = [], []
    for layer, roles in found.items():
        missing = sorted(set(ROLES) - set(roles))
        if missing:
            problems.append(f"{layer}: no {', '.join(missing)} projection")
            continue
        for role, (side, count) in widths.items():
            width = getattr(model.get_submodule(roles[role]), side)
            if width != count * head_dim:
                problems.append(f"{roles[role]}: {side} {width}, expected {count} heads x {head_dim}")
        blocks.append(Attention(layer, heads=heads, kv_heads=kv_heads, head_dim=head_dim, **roles))
    if problems or not blocks:
        known = ", ".join(ending for endings in ROLES.values() for ending in endings)
        raise ValueError(
            f"{type(model).__name__}: {'; '.join(problems) or 'no attention block'} "
            f"(head pruning knows the projections {known})"
        )
    if heads % kv_heads:
        raise ValueError(f"{type(model).__name__}: {heads} query heads do not split into {kv_heads} key/value groups")
    return blocks


def heads_kept(block: Attention, sparsity: float) -> int:
    """How many heads of a layer a ``sparsity`` keeps: ``kept_count`` of all heads, or with grouped
    keys and values of each group's query heads (times the groups)."""
    if block.kv_heads == block.heads:
        return kept_count(block.heads, sparsity)
    return kept_count(block.group, sparsity) * block.kv_heads


def head_importance(model: nn.Module, blocks: list[Attention], calibration, kind: str = "activation") -> dict[str, torch.Tensor]:
    """Every head's importance (``activation`` or ``gradient``), by layer: ``heads`` values each."""
    score = taylor_importance if kind == "gradient" else rms_importance
    (head_dim,) = {block.head_dim for block in blocks}
    return score(model, {block.layer: block.output for block in blocks}, calibration, group=head_dim)


def kept_heads(block: Attention, importance: torch.Tensor, keep: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """``True`` for the ``keep`` most important heads (among those still ``alive``); with grouped
    keys and values, ``keep / kv_heads`` in each group."""
    scores = importance.detach().clone().float()
    if alive is not None:
        scores[~alive.to(scores.device)] = -torch.inf
    groups = 1 if block.kv_heads == block.heads else block.kv_heads
    if keep % groups:
        raise ValueError(f"{block.layer}: {keep} heads do not split evenly over {groups} key/value groups")
    grouped = scores.reshape(groups, -1)
    kept = torch.zeros_like(grouped, dtype=torch.bool)
    kept.scatter_(1, torch.topk(grouped, keep // groups, dim=1, sorted=False).indices, True)
    return kept.flatten()


def _rows(kept: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The per-feature form of a per-head mask (each head's ``head_dim`` features)."""
    return kept.repeat_interleave(head_dim)


def head_masks(model: nn.Module, block: Attention, kept: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameter masks that switch off the heads not ``kept``: output-projection columns, query
    rows and (one key/value head per query head) key and value rows, with their biases."""
    features = _rows(kept, block.head_dim)
    output = model.get_submodule(block.output)
    masks = {f"{block.output}.weight": features[None, :].expand_as(output.weight).clone()}
    for name in [block.query] + ([block.key, block.value] if block.kv_heads == block.heads else []):
        layer = model.get_submodule(name)
        masks[f"{name}.weight"] = features[:, None].expand_as(layer.weight).clone()
        if layer.bias is not None:
            masks[f"{name}.bias"] = features.clone()
    return masks


def alive_heads(masks, block: Attention) -> torch.Tensor | None:
    """The heads a mask set still keeps in ``block`` (``None``: no mask yet)."""
    mask = masks.get(f"{block.output}.weight")
    return None if mask is None else mask[0].reshape(block.heads, block.head_dim)[:, 0]


def removable(model: nn.Module) -> str | None:
    """``None`` when the model's config can express fewer heads of the same size, else why not."""
    if isinstance(getattr(model.config, "head_dim", None), int):
        return None
    return (
        f"{type(model.config).__name__} has no head_dim: its head size is hidden_size / num_attention_heads, "
        "so fewer heads cannot be saved in its stock config; the heads stay, masked to zero"
    )


def shrink_attention_heads(model: nn.Module, kept: dict[str, torch.Tensor]) -> int:
    """Remove the heads not ``kept`` (by layer) from ``model``, in place, and set its config's
    ``num_attention_heads`` (and ``num_key_value_heads`` when each query head had its own); every
    layer must keep the same number. Returns that number. A config without ``head_dim`` raises
    :class:`HeadsNotRemovable` before anything changes."""
    reason = removable(model)
    if reason is not None:
        raise HeadsNotRemovable(reason)
    counts = {layer: int(mask.sum()) for layer, mask in kept.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"head pruning keeps the same number of heads per layer; got {counts}")
    keep = next(iter(counts.values()))
    blocks = attention_blocks(model)
    for block in blocks:
        if block.layer not in kept:
            raise ValueError(f"{block.layer}: no head mask (masks for {sorted(kept)})")
        index = _rows(kept[block.layer].cpu(), block.head_dim).nonzero().flatten()
        slice_linear(model.get_submodule(block.output), index, dim=1)
        shared = block.kv_heads != block.heads
        for name in [block.query] + ([] if shared else [block.key, block.value]):
            slice_linear(model.get_submodule(name), index, dim=0)
        attention = model.get_submodule(block.module)
        kv_heads = block.kv_heads if shared else keep
        for attribute in HEAD_COUNT_ATTRIBUTES:
            if isinstance(getattr(attention, attribute, None), int):
                setattr(attention, attribute, keep)
        if isinstance(getattr(attention, "num_key_value_groups", None), int):
            attention.num_key_value_groups = keep // kv_heads
    config = model.config
    config.num_attention_heads = keep
    if getattr(config, "num_key_value_heads", None) is not None and blocks[0].kv_heads == blocks[0].heads:
        config.num_key_value_heads = keep
    config.head_dim = blocks[0].head_dim
    _check_stock_shapes(model)
    return keep


def _check_stock_shapes(model: nn.Module) -> None:
    """The shrunk model's parameters have the shapes its class builds from the new config (what
    ``from_pretrained`` will build), or a ``ValueError`` names the first that does not."""
    with torch.device("meta"):
        stock = type(model)(model.config)
    expected = {name: tuple(tensor.shape) for name, tensor in stock.state_dict().items()}
    for name, tensor in model.state_dict().items():
        if name in expected and tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{type(model).__name__}: after head removal {name} is {tuple(tensor.shape)}, but its config "
                f"builds {expected[name]}; the heads cannot be removed from this architecture"
            )
