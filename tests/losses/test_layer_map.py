"""Tests for distill/losses/layer_map.py."""

import pytest

from distill.losses import resolve_layer_map


def test_uniform_is_tinybert_g_of_m_with_embeddings_to_embeddings():
    assert resolve_layer_map("uniform", 3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert resolve_layer_map("uniform", 4, 12) == [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]


def test_skip_and_last_are_the_pkd_strategies():
    assert resolve_layer_map("skip", 6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]
    assert resolve_layer_map("last", 3, 6) == [(1, 4), (2, 5), (3, 6)]


def test_explicit_pairs():
    assert resolve_layer_map([[0, 0], [3, 6]], 3, 6) == [(0, 0), (3, 6)]


@pytest.mark.parametrize(
    ("layer_map", "message"),
    [
        ([[4, 6]], "pair [4, 6]: student layer 4 is out of range; the student has 3 layers (hidden_states 0..3"),
        ([[1, 7]], "pair [1, 7]: teacher layer 7 is out of range"),
        ([[1, 2, 3]], "each entry must be [student_layer, teacher_layer]"),
        ([], "is empty"),
        ("diagonal", "choose one of ['uniform', 'skip', 'last']"),
    ],
)
def test_invalid_maps_name_the_layers_and_the_sizes(layer_map, message):
    with pytest.raises(ValueError, match="the teacher 6|one of|empty|each entry") as raised:
        resolve_layer_map(layer_map, 3, 6)
    assert message in str(raised.value)


def test_uniform_needs_a_multiple_and_last_a_shallower_student():
    with pytest.raises(ValueError, match="multiple of the student's"):
        resolve_layer_map("uniform", 4, 6)
    with pytest.raises(ValueError, match="no deeper than the teacher"):
        resolve_layer_map("last", 4, 2)
