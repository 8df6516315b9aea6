"""Pruning during distillation: sparsity schedules, scores and masks (magnitude, Wanda, N:M),
SparseGPT, and structured (FFN neuron) pruning with a physically smaller export. The callbacks that
apply them to a run are in :mod:`distill.callbacks.pruning`; docs/compression.md explains each."""
