"""The fields of the ``compress.prune`` nodes: allowed values, and the checks that name every bad
field before any weights load (:class:`distill.callbacks.Pruning`,
:class:`distill.callbacks.FeedForwardPruning`, :class:`distill.callbacks.AttentionHeadPruning`)."""

from __future__ import annotations

from distill.pruning.schedule import SCHEDULES

#: Where these nodes sit in a run config (their problems are named under it).
FIELD = "compress.prune"
#: Where the attention-head node sits (it composes with an FFN or unstructured ``prune`` node).
HEADS_FIELD = "compress.prune_heads"
#: Scores: |W|; Wanda's |W|·‖X_j‖₂; SparseGPT's w²/[H⁻¹]_jj² with its weight update.
CRITERIA = ("magnitude", "wanda", "sparsegpt")
#: Comparison groups of the unstructured criteria (``null``: the criterion's own, see :class:`Pruning`).
SCOPES = (None, "layer", "global", "row")
#: FFN neuron importance.
IMPORTANCE = ("activation", "gradient")


def _is_int(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _is_fraction(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"2:4"`` → ``(2, 4)``; ``None`` stays ``None``; anything else raises ``ValueError``."""
    if pattern is None:
        return None
    n, _, m = str(pattern).partition(":")
    if not (n.isdigit() and m.isdigit()) or not 0 < int(n) < int(m):
        raise ValueError(pattern)
    return int(n), int(m)


def schedule_problems(
    kind, sparsity, start_step, end_step, every, initial_sparsity, calibration_batches, field: str = FIELD
) -> list[str]:
    """The schedule's bad fields, each named under ``field`` (the node's place in the run config)."""
    problems = []
    if kind not in SCHEDULES:
        problems.append(f"{field}.schedule={kind!r}: allowed: {list(SCHEDULES)}")
    if not _is_fraction(sparsity):
        problems.append(f"{field}.sparsity={sparsity!r}: a fraction 0 < sparsity < 1 (the share of weights set to zero)")
    if not _is_int(start_step, 0):
        problems.append(f"{field}.start_step={start_step!r}: an integer >= 0 (the step pruning starts)")
    if not _is_int(every, 1):
        problems.append(f"{field}.every={every!r}: an integer >= 1 (steps between mask updates)")
    if not _is_int(calibration_batches, 1):
        problems.append(f"{field}.calibration_batches={calibration_batches!r}: an integer >= 1")
    if kind == "gradual":
        if not _is_int(end_step, 0) or (_is_int(start_step, 0) and end_step <= start_step):
            problems.append(
                f"{field}.end_step={end_step!r}: schedule=gradual needs an integer end_step > start_step "
                f"({start_step!r}), the step the target sparsity is reached"
            )
        fraction_ok = not isinstance(initial_sparsity, bool) and isinstance(initial_sparsity, (int, float))
        if not fraction_ok or not 0 <= initial_sparsity < (sparsity if _is_fraction(sparsity) else 1):
            problems.append(
                f"{field}.initial_sparsity={initial_sparsity!r}: a fraction 0 <= initial_sparsity < sparsity"
            )
    return problems
