"""Peak memory and time of the chunked token-level losses against a naive full-logit version.

The naive version is what one writes first: ``log_softmax`` of both ``(N, V)`` logits in float32,
``F.kl_div``, sum, backward (the generalized JSD as TRL writes it: the mixture by ``logsumexp``
over a stacked pair). The chunked one is :mod:`distill.losses.tokens` with ``--chunk-size`` rows
at a time. Each (loss, version) runs forward + backward in fresh processes (``--processes``), so
each peak is its own:

- CPU: ``ru_maxrss`` after the first forward + backward, minus the resident set measured right
  after the inputs were allocated (``/proc/self/statm``): the memory the loss *added*;
- CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` minus the allocated bytes after the
  inputs.

Times are medians of ``--repeats`` forward + backward runs after that first one. A last process
computes both versions on the same inputs and prints the relative differences of the loss and of
the gradient (goal: loss within 1e-5), and of each against the same loss in float64. Goal printed:
chunked peak >= 3x below naive.

On CPU, chunk buffers of 32 MiB or more (256 rows x 49,152 x 4 bytes = 48 MiB) are mmapped afresh
by glibc for every chunk, page faults included; ``--chunk-size 64`` (12 MiB) is faster there.

    python scripts/bench_token_kl.py                          # N = 4 x 512 = 2,048 rows, V = 49,152
    python scripts/bench_token_kl.py --quick                  # small, seconds
    python scripts/bench_token_kl.py --device cuda --dtype bfloat16 --losses forward
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from distill.losses import generalized_jsd, token_forward_kl, token_reverse_kl

LOSSES = ("forward", "reverse", "jsd")
VERSIONS = ("naive", "chunked")
MIB = 2**20


def naive_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float, beta: float) -> torch.Tensor:
    """The full-logit version: every (N, V) intermediate in float32 at once."""
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    rows = student.size(0)
    if kind == "forward":  # KL(p_t || p_s)
        total = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum()
    elif kind == "reverse":  # KL(p_s || p_t)
        total = F.kl_div(log_t, log_s, log_target=True, reduction="none").sum()
    else:  # β KL(p_t || m) + (1-β) KL(p_s || m), m = β p_t + (1-β) p_s
        log_m = torch.logsumexp(torch.stack([log_s + math.log1p(-beta), log_t + math.log(beta)]), dim=0)
        total = beta * F.kl_div(log_m, log_t, log_target=True, reduction="none").sum() + (1 - beta) * F.kl_div(
            log_m, log_s, log_target=True, reduction="none"
        ).sum()
    return total / rows * temperature**2


def chunked_loss(kind: str, student, teacher, temperature: float, beta: float, chunk_size: int) -> torch.Tensor:
    if kind == "forward":
        return token_forward_kl(student, teacher, temperature, chunk_size)
    if kind == "reverse":
        return token_reverse_kl(student, teacher, temperature, chunk_size)
    return generalized_jsd(student, teacher, temperature, beta, chunk_size)


def make_inputs(args) -> tuple[torch.Tensor, torch.Tensor]:
    """Student (leaf, with grad) and teacher logits, seeded; scale 4 gives peaked distributions."""
    generator = torch.Generator(device=args.device).manual_seed(0)
    dtype = getattr(torch, args.dtype)
    shape = (args.rows, args.vocab)
    student = (torch.randn(shape, generator=generator, device=args.device) * 4).to(dtype).requires_grad_(True)
    teacher = (torch.randn(shape, generator=generator, device=args.device) * 4).to(dtype)
    return student, teacher


def step(args, kind: str, version: str, student, teacher) -> torch.Tensor:
    student.grad = None
    if version == "naive":
        loss = naive_loss(kind, student, teacher, args.temperature, args.beta)
    else:
        loss = chunked_loss(kind, student, teacher, args.temperature, args.beta, args.chunk_size)
    loss.backward()
    return loss.detach()


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(args) -> dict:
    """One (loss, version) in this process: peak added by the first forward + backward, then times."""
    kind, version = args.variant.split(":")
    cuda = args.device == "cuda"
    student, teacher = make_inputs(args)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss()
    start = time.perf_counter()
    value = step(args, kind, version, student, teacher)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss: KiB on Linux
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(args, kind, version, student, teacher)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"peak_mib": peak / MIB, "first_s": first, "times_s": times, "value": value.item()}


def run_check(args) -> dict:
    """Both versions on the same inputs, and the chunked formula in float64 as the reference: the
    relative differences of the loss and of the gradient (max |diff| / max |grad|)."""
    kind = args.variant.split(":")[1]
    student, teacher = make_inputs(args)
    naive = step(args, kind, "naive", student, teacher).item()
    naive_grad = student.grad.float()
    chunked = step(args, kind, "chunked", student, teacher).item()
    chunked_grad = student.grad.float()
    student.grad = None
    exact_student = student.detach().double().requires_grad_(True)
    exact = chunked_loss(kind, exact_student, teacher.double(), args.temperature, args.beta, args.chunk_size)
    exact.backward()
    exact, exact_grad = exact.item(), exact_student.grad
    scale = exact_grad.abs().max().item()

    def grad_rel(grad: torch.Tensor, other: torch.Tensor) -> float:
        return (grad.double() - other.double()).abs().max().item() / scale

    return {
        "naive": naive,
        "chunked": chunked,
        "float64": exact,
        "loss_rel": abs(chunked - naive) / abs(naive),
        "grad_rel": grad_rel(chunked_grad, naive_grad),
        "chunked_loss_err": abs(chunked - exact) / abs(exact),
        "naive_loss_err": abs(naive - exact) / abs(exact),
        "chunked_grad_err": grad_rel(chunked_grad, exact_grad),
        "naive_grad_err": grad_rel(naive_grad, exact_grad),
    }


def child(args, variant: str) -> dict:
    """Run this script for one variant in a fresh process and read back its JSON line."""
    command = [sys.executable, __file__, "--variant", variant, "--rows", str(args.rows), "--vocab", str(args.vocab),
               "--chunk-size", str(args.chunk_size), "--dtype", args.dtype, "--device", args.device,
               "--temperature", str(args.temperature), "--beta", str(args.beta), "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4 * 512, help="N selected positions (batch 4 x sequence 512)")
    parser.add_argument("--vocab", type=int, default=49_152, help="V (SmolLM2's vocabulary)")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.5, help="for the generalized JSD")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--processes", type=int, default=2, help="fresh processes per (loss, version)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward + backward runs per process")
    parser.add_argument("--quick", action="store_true", help="N=256, V=4,096, chunk 64, one process")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: "<loss>:<version>" or "check:<loss>"
    args = parser.parse_args()
    if args.quick:
        args.rows, args.vocab, args.chunk_size, args.processes, args.repeats = 256, 4096, 64, 1, 2

    if args.variant:
        result = run_check(args) if args.variant.startswith("check:") else run_variant(args)
        print(json.dumps(result))
        return

    unit = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    print(f"N={args.rows} rows x V={args.vocab}, {args.dtype} on {args.device}, chunk {args.chunk_size} rows, "
          f"T={args.temperature}, beta={args.beta}; one (N, V) float32 = {args.rows * args.vocab * 4 / MIB:.0f} MiB, "
          f"in {args.dtype} = {args.rows * args.vocab * unit / MIB:.0f} MiB")
    print(f"{args.processes} process(es) per version, {args.repeats} timed forward+backward runs each; peak = "
          f"{'max_memory_allocated' if args.device == 'cuda' else 'ru_maxrss'} added by forward+backward")
    print(f"{'loss':>8} {'version':>8} {'peak MiB':>9} {'median s':>9}")
    summary = {}
    for kind in args.losses:
        results = {version: [child(args, f"{kind}:{version}") for _ in range(args.processes)] for version in VERSIONS}
        peak = {v: statistics.median(r["peak_mib"] for r in results[v]) for v in VERSIONS}
        seconds = {v: statistics.median(t for r in results[v] for t in r["times_s"]) for v in VERSIONS}
        for version in VERSIONS:
            print(f"{kind:>8} {version:>8} {peak[version]:>9.0f} {seconds[version]:>9.3f}")
        check = child(args, f"check:{kind}")
        memory_ratio = peak["naive"] / max(peak["chunked"], 1e-9)
        summary[kind] = (memory_ratio, seconds["naive"] / seconds["chunked"], check)
    print()
    for kind, (memory_ratio, time_ratio, check) in summary.items():
        print(f"{kind:>8}: naive / chunked peak {memory_ratio:.2f}x (goal >= 3: {'met' if memory_ratio >= 3 else 'NOT met'}), "
              f"time {time_ratio:.2f}x")
        print(f"{'':>10}loss chunked {check['chunked']:.6f}, naive {check['naive']:.6f}: rel diff "
              f"{check['loss_rel']:.1e} ({'<=' if check['loss_rel'] <= 1e-5 else 'ABOVE'} 1e-5); gradient "
              f"max |diff| / max |grad| {check['grad_rel']:.1e}")
        print(f"{'':>10}against float64 ({check['float64']:.6f}): loss chunked {check['chunked_loss_err']:.1e}, "
              f"naive {check['naive_loss_err']:.1e}; gradient chunked {check['chunked_grad_err']:.1e}, "
              f"naive {check['naive_grad_err']:.1e}")


if __name__ == "__main__":
    main()
