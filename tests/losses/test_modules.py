"""Tests for distill/losses/modules.py: a loss on any module's output, by dotted path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.losses import LossInputs, LossMix, ModelOutputs, ModelShape, ModuleOutputLoss, module_output_distance
from distill.models import capture_modules, capture_outputs, module_key, module_output_widths


def reference(student, teacher, mask, metric):
    """Per real token, by loops: the mean over real tokens of the per-token distance."""
    values = []
    for b in range(student.size(0)):
        for t in range(student.size(1)):
            if mask[b, t]:
                s, u = student[b, t], teacher[b, t]
                values.append(((s - u) ** 2).mean() if metric == "mse" else 1 - F.cosine_similarity(s, u, dim=0))
    return torch.stack(values).mean()


@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_distance_matches_reference_and_padding_never_contributes(metric):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 6, generator=generator)
    teacher = torch.randn(2, 5, 6, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    value = module_output_distance(student, teacher, mask, metric)
    assert value.item() == pytest.approx(reference(student, teacher, mask, metric).item(), rel=1e-5)
    changed_student, changed_teacher = student.clone(), teacher.clone()
    changed_student[mask == 0] = 1e4
    changed_teacher[mask == 0] = -1e4
    assert torch.equal(module_output_distance(changed_student, changed_teacher, mask, metric), value)


def test_outputs_that_are_not_per_token_take_a_plain_mean():
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    mask = torch.ones(3, 7)
    assert module_output_distance(student, teacher, mask, "mse").item() == pytest.approx(
        ((student - teacher) ** 2).mean().item(), rel=1e-6
    )
    scores_s, scores_t = torch.randn(2, 2, 5, 5), torch.randn(2, 2, 5, 5)  # (B, heads, T, T): not (B, T, H)
    assert module_output_distance(scores_s, scores_t, torch.ones(2, 5), "mse").item() == pytest.approx(
        ((scores_s - scores_t) ** 2).mean().item(), rel=1e-6
    )


def test_shape_mismatch_names_both_widths():
    with pytest.raises(ValueError, match="widths 4 vs 6"):
        module_output_distance(torch.randn(1, 2, 4), torch.randn(1, 2, 6), None)


class Tower(nn.Module):
    """A plain (non-transformers) model: embedding, two blocks returning tuples, a head."""

    def __init__(self, width: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(50, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(2))
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        for block in self.blocks:
            hidden, _ = block(hidden)
        return self.head(hidden[:, 0])


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, hidden):
        out = self.norm(hidden + torch.tanh(self.dense(hidden)))
        return out, out.mean()  # a tuple: the first element is what a loss reads


def shape(name, model, width):
    return ModelShape(name=name, num_layers=2, hidden_size=width, num_heads=1, modules=module_output_widths(model))


def run(model, term_paths, inputs):
    with capture_outputs(capture_modules(model, (), term_paths)) as captured:
        model(**inputs)
    return ModelOutputs(logits=None, captured=captured)


def test_plain_module_term_reference_value_gradients_to_student_and_projection():
    student, teacher = Tower(width=4, seed=0), Tower(width=6, seed=1)
    term = ModuleOutputLoss(student_module="blocks.1", teacher_module="blocks.0.dense")
    term.bind(shape("student tower", student, 4), shape("teacher tower", teacher, 6))
    assert module_output_widths(student)["blocks.1.norm"] == 4 and module_output_widths(student)["blocks.1"] is None
    # blocks.1 returns a tuple whose width is known only at run time: no projection could be built.
    assert len(term.projections) == 0
    with pytest.raises(ValueError, match="widths 4 vs 6.*no projection was built"):
        inputs = {"input_ids": torch.randint(0, 50, (2, 5)), "attention_mask": torch.ones(2, 5)}
        term(LossInputs(student=run(student, ("blocks.1",), inputs), teacher=run(teacher, ("blocks.0.dense",), inputs),
                        labels=None, attention_mask=inputs["attention_mask"]))

    term = ModuleOutputLoss(student_module="blocks.1.norm", teacher_module="blocks.0.dense", metric="mse")
    term.bind(shape("student tower", student, 4), shape("teacher tower", teacher, 6))
    (projection,) = term.projections
    assert (projection.in_features, projection.out_features) == (4, 6)
    inputs = {"input_ids": torch.randint(0, 50, (2, 5)), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1] * 5])}
    student_out = run(student, ("blocks.1.norm",), inputs)
    with torch.no_grad():
        teacher_out = run(teacher, ("blocks.0.dense",), inputs)
    value = term(LossInputs(student=student_out, teacher=teacher_out, labels=None, attention_mask=inputs["attention_mask"]))
    # Reference: run the modules by hand.
    with torch.no_grad():
        hidden = student.blocks[0](student.embed(inputs["input_ids"]))[0]
        s = student.blocks[1].norm(hidden + torch.tanh(student.blocks[1].dense(hidden)))
        t = teacher.blocks[0].dense(teacher.embed(inputs["input_ids"]))
    expected = reference(projection(s), t, inputs["attention_mask"], "mse")
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert student.blocks[1].dense.weight.grad.abs().sum() > 0  # through the captured module's inputs
    assert student.head.weight.grad is None  # the head is after the captured module
    assert all(p.grad is None for p in teacher.parameters())
    # Hooks exist only inside capture_outputs.
    assert all(not m._forward_hooks for model in (student, teacher) for m in model.modules())


def test_captured_keys_sit_beside_attention_projections_without_collisions():
    from conftest import tiny_bert

    model = tiny_bert(num_layers=2).eval()
    modules = capture_modules(model, ("query",), ("bert.encoder.layer.1.output.dense", "bert.encoder.layer.0"))
    assert set(modules) == {"query", module_key("bert.encoder.layer.1.output.dense"), module_key("bert.encoder.layer.0")}
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    with capture_outputs(modules) as captured:
        output = model(**inputs, output_hidden_states=True)
    assert len(captured["query"]) == 2
    # A BertLayer output (a tuple in some versions) is stored as its first tensor: hidden state 1.
    assert torch.equal(captured[module_key("bert.encoder.layer.0")][0], output.hidden_states[1])
    assert captured[module_key("bert.encoder.layer.1.output.dense")][0].shape == (2, 6, 32)
    widths = module_output_widths(model)
    assert widths["bert.encoder.layer.0"] == 32 and widths["bert.embeddings.word_embeddings"] == 32
    assert widths["bert.encoder.layer.0.intermediate.dense"] == 64


def test_bind_refuses_an_unknown_path_with_close_matches_and_mismatched_widths_without_projection():
    student, teacher = Tower(width=4, seed=0), Tower(width=6, seed=1)
    loss = LossMix({"feat": {"weight": 1.0, "loss": ModuleOutputLoss("blocks.1.dence", "blocks.0.dense")}})
    (problem,) = loss.bind(shape("student tower", student, 4), shape("teacher tower", teacher, 6))
    assert problem.startswith("loss.terms.feat.loss.student_module='blocks.1.dence': student tower has no module")
    assert "close matches: ['blocks.1.dense'" in problem
    loss = LossMix({"feat": {"weight": 1.0, "loss": ModuleOutputLoss("blocks.1.dense", "blocks.0.dense", projection=None)}})
    (problem,) = loss.bind(shape("student tower", student, 4), shape("teacher tower", teacher, 6))
    assert problem.startswith("loss.terms.feat: projection=null needs equal widths")
    assert "'blocks.1.dense' (width 4, student tower)" in problem and "'blocks.0.dense' (width 6, teacher tower)" in problem


def test_pairs_of_paths_and_shared_projection():
    student, teacher = Tower(width=4, seed=0), Tower(width=6, seed=1)
    term = ModuleOutputLoss(["blocks.0.dense", "blocks.1.dense"], ["blocks.0.norm", "blocks.1.norm"], projection="shared")
    term.bind(shape("s", student, 4), shape("t", teacher, 6))
    assert len(term.projections) == 1 and term.student_modules == ("blocks.0.dense", "blocks.1.dense")
    per_pair = ModuleOutputLoss(["blocks.0.dense", "embed"], ["blocks.0.norm", "embed"])
    per_pair.bind(shape("s", student, 4), shape("t", teacher, 6))
    assert len(per_pair.projections) == 2
    with pytest.raises(ValueError, match="one teacher module per student module"):
        ModuleOutputLoss(["a", "b"], "c")
