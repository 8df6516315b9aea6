"""Depth pruning by Block Influence (distill/pruning/depth.py): the score is 1 - mean cosine between
a layer's input and output over the real tokens; the student copies the most influential layers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import TINY_RUN, compose
from distill.errors import ConfigError
from distill.pruning.depth import block_influence, calibration_batches, most_influential_layers
from distill.train import build_run


class _Stack(nn.Module):
    """Three 'layers' on 2-d hidden states: a rotation by 90°, the identity, a rotation by 45°."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # a model has parameters (their device is the batch's)

    def forward(self, input_ids, attention_mask, output_hidden_states=True):
        h0 = input_ids.float()
        rotate = lambda h, angle: torch.stack(  # noqa: E731
            [h[..., 0] * torch.cos(angle) - h[..., 1] * torch.sin(angle),
             h[..., 0] * torch.sin(angle) + h[..., 1] * torch.cos(angle)], -1)
        h1 = rotate(h0, torch.tensor(torch.pi / 2))
        h2 = h1.clone()
        h3 = rotate(h2, torch.tensor(torch.pi / 4))
        return SimpleNamespace(hidden_states=(h0, h1, h2, h3))


def test_block_influence_is_one_minus_the_mean_cosine_over_real_tokens():
    # Padding (mask 0) is a vector the layers would treat alike; it must not count.
    batch = {"input_ids": torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]]),
             "attention_mask": torch.tensor([[1, 1, 0]]), "labels": torch.tensor([0])}
    influence = block_influence(_Stack(), [batch, batch])
    torch.testing.assert_close(influence, torch.tensor([1.0, 0.0, 1.0 - 2**-0.5]))  # cos 90°, 0°, 45°
    assert most_influential_layers(influence, 2) == [0, 2]  # the identity layer goes
    assert most_influential_layers(torch.tensor([0.3, 0.1, 0.3]), 1) == [0]  # a tie keeps the earlier layer
    with pytest.raises(ValueError, match="keep=4: choose between 1 and the model's 3 layers"):
        most_influential_layers(influence, 4)


def test_the_student_copies_the_layers_of_highest_influence_and_reports_them(data_dir, tmp_path):
    four = ["teacher.config.num_hidden_layers=4", "student=from_teacher_3l", "student.init_from_teacher_layers=[0,1]",
            "+student.layer_choice=block_influence", "+student.layer_choice_batches=2"]
    module, datamodule, _, extras = build_run(compose([*TINY_RUN, *four], tmp_path))
    choice = extras["layer_choice"]
    assert len(choice["block_influence"]) == 4 and choice["source"] == "teacher"
    assert choice["layers"] == most_influential_layers(torch.tensor(choice["block_influence"]), 2)
    teacher_layers, student_layers = module.teacher.bert.encoder.layer, module.student.bert.encoder.layer
    assert len(student_layers) == 2
    for student_layer, index in zip(student_layers, choice["layers"]):
        for (name, value), (_, expected) in zip(student_layer.state_dict().items(), teacher_layers[index].state_dict().items()):
            assert torch.equal(value, expected), (index, name)
    # The same examples score the layers whatever the run's seed (every rank, every seed).
    other = build_run(compose([*TINY_RUN, "seed=3"], tmp_path / "other"))[1]
    for one, two in zip(calibration_batches(datamodule, 2, 4), calibration_batches(other, 2, 4)):
        assert torch.equal(one["input_ids"], two["input_ids"])


@pytest.mark.parametrize("overrides, message", [
    (["+student.layer_choice=best"], "student.layer_choice='best': allowed ['listed', 'block_influence']"),
    (["+student.layer_choice=block_influence"], "student.layer_choice='block_influence' chooses which layers"),
    (["student=from_teacher_3l", "+student.layer_choice_batches=0"], "student.layer_choice_batches=0: use an integer >= 1"),
])
def test_bad_layer_choices_are_refused_before_any_weights_load(data_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        build_run(compose([*TINY_RUN, *overrides], tmp_path))
    assert message in str(error.value)
