"""Which student layer learns from which teacher layer.

Layer indices follow ``hidden_states``: 0 is the embedding output, ``1..L`` the transformer layers.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Named strategies accepted by ``layer_map``.
LAYER_MAP_STRATEGIES = ("uniform", "skip", "last")


def resolve_layer_map(
    layer_map: str | Sequence[Sequence[int]],
    student_layers: int,
    teacher_layers: int,
    field: str = "layer_map",
) -> list[tuple[int, int]]:
    r"""``(student_index, teacher_index)`` pairs into ``hidden_states`` for a strategy or explicit list.

    - ``uniform`` (TinyBERT, Jiao et al. 2020, arXiv:1909.10351): :math:`g(m) = m \cdot N / M` for
      :math:`m = 0..M`, so embeddings map to embeddings and the last layer to the last layer.
    - ``skip`` (PKD-Skip, Sun et al. 2019, arXiv:1908.09355): the intermediate layers
      :math:`m = 1..M-1` to teacher layers :math:`m \cdot N / M` (the last layer is left to the
      logit loss).
    - ``last`` (PKD-Last): student layers :math:`m = 1..M` to the teacher's last :math:`M` layers,
      :math:`N - M + m`.
    - ``[[s, t], ...]``: explicit pairs.

    Args:
        layer_map: a strategy name or explicit pairs.
        student_layers: ``M``, the student's transformer layers (``hidden_states`` has ``M + 1``).
        teacher_layers: ``N``, the teacher's.
        field: the config field, for error messages.

    Raises:
        ValueError: naming the field, the pair, the model and how many layers each model has.
    """
    M, N = student_layers, teacher_layers
    sizes = (
        f"the student has {M} layers (hidden_states 0..{M}, 0 = embeddings), "
        f"the teacher {N} (0..{N})"
    )
    if isinstance(layer_map, str):
        if layer_map not in LAYER_MAP_STRATEGIES:
            raise ValueError(f"{field}={layer_map!r}: choose one of {list(LAYER_MAP_STRATEGIES)} or [[student, teacher], ...]")
        if N % M and layer_map in ("uniform", "skip"):
            raise ValueError(
                f"{field}={layer_map!r} needs the teacher depth to be a multiple of the student's: {sizes}; "
                "give explicit pairs instead"
            )
        if layer_map == "uniform":
            return [(m, m * N // M) for m in range(M + 1)]
        if layer_map == "skip":
            pairs = [(m, m * N // M) for m in range(1, M)]
            if not pairs:
                raise ValueError(f"{field}='skip' needs a student with at least 2 layers: {sizes}")
            return pairs
        if M > N:
            raise ValueError(f"{field}='last' needs a student no deeper than the teacher: {sizes}")
        return [(m, N - M + m) for m in range(1, M + 1)]
    pairs = []
    for pair in layer_map:
        pair = list(pair)
        if len(pair) != 2:
            raise ValueError(f"{field}: each entry must be [student_layer, teacher_layer], got {pair}")
        student_index, teacher_index = int(pair[0]), int(pair[1])
        problems = []
        if not 0 <= student_index <= M:
            problems.append(f"student layer {student_index} is out of range")
        if not 0 <= teacher_index <= N:
            problems.append(f"teacher layer {teacher_index} is out of range")
        if problems:
            raise ValueError(f"{field}: pair {pair}: {' and '.join(problems)}; {sizes}")
        pairs.append((student_index, teacher_index))
    if not pairs:
        raise ValueError(f"{field} is empty; give at least one [student_layer, teacher_layer] pair")
    return pairs
