"""The teacher-output cache against the online teacher: same student, same budget, one process.

Runs one experiment three ways per seed, back to back: KD with the online teacher, KD reading the
teacher cache, and the student alone (``loss=ce``: no teacher term, the floor a cached step can
reach). The cache is built once first (its build time is printed apart). Prints each way's median
step time and fit / whole-run wall time, their ratios, and the final metrics side by side.

    DISTILL_DATA_DIR=../shared/data python scripts/bench_cache.py                       # distilbert_task, 700 steps
    DISTILL_DATA_DIR=../shared/data python scripts/bench_cache.py --seeds 0 1 2 -- trainer.max_steps=200
    DISTILL_DATA_DIR=../shared/data python scripts/bench_cache.py --experiment smollm2_token_kd -- data.train_limit=800
    DISTILL_DATA_DIR=../shared/data python scripts/bench_cache.py --experiment quickstart -- 'teacher_cache.hidden_layers=[-1]'

Overrides after ``--`` apply to every way, except ``teacher_cache.*`` ones, which apply to the cache
build and the cached way only (the online and student-only runs use no cache). The student-only
way is always ``loss=ce``, whatever loss the experiment or the overrides name.

Goals (issue: teacher cache): cached step <= 1.10x the student-only step; metrics equal within
float16 rounding (teacher_cache.dtype=float32 for identical teacher targets).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from distill.train import cache_teacher, train

WAYS = {"online": ["teacher_cache.enabled=false"], "cached": ["teacher_cache.enabled=true"], "student_only": ["loss=ce"]}


def run_config(overrides: list[str], output_dir: Path, cache_dir: str | None):
    """The config ``distill <overrides>`` would get, writing under ``output_dir``."""
    paths = [f"paths.output_dir={output_dir}", f"paths.log_dir={output_dir}"]
    if cache_dir is not None:
        paths.append(f"paths.cache_dir={cache_dir}")
    with initialize_config_module(config_module="distill.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*paths, "logger=csv", "trainer.enable_progress_bar=false", *overrides],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _headline(summary: dict) -> dict:
    """The student's figures printed per run: the task metric (accuracy and F1, or perplexity) and
    its agreement with the teacher."""
    student = summary["student"]
    figures = {key: student[key] for key in ("accuracy", "f1", "perplexity", "agreement") if student.get(key) is not None}
    if "language_model" in summary:
        figures["agreement"] = summary["language_model"]["agreement"]
    return {key: round(value, 4) for key, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="distilbert_task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cache-dir", default=None, help="fine-tuned teachers and teacher caches (default: paths.cache_dir)")
    parser.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="more config overrides, after --")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_cache-"))
    cache_only = [item for item in args.overrides if item.lstrip("+~").startswith("teacher_cache.")]
    base = [f"experiment={args.experiment}", *(item for item in args.overrides if item not in cache_only)]
    ways = {way: [*overrides, *cache_only] if way == "cached" else overrides for way, overrides in WAYS.items()}
    cache_dir = args.cache_dir  # None: the config's paths.cache_dir (DISTILL_CACHE_DIR or ~/.cache/distill)

    start = time.perf_counter()
    built = cache_teacher(run_config([*base, *cache_only, "stage=cache_teacher"], out / "cache_build", cache_dir))
    build_seconds = time.perf_counter() - start
    print(f"teacher cache: {built['path']}  {built['bytes'] / 2**20:.1f} MiB, {built['examples']}, "
          f"hidden layers {built.get('hidden_layers')}, "
          f"built in {built['build_seconds']} s (whole command {build_seconds:.1f} s)")

    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    for seed in args.seeds:
        for way, overrides in ways.items():
            start = time.perf_counter()
            summary = train(run_config([*base, f"seed={seed}", *overrides], out / f"{way}_{seed}", cache_dir))
            summary["run_seconds"] = time.perf_counter() - start
            results[way].append(summary)
            timing = summary["timing"]
            print(f"seed {seed} {way:>12}: step {timing['step_ms_median']:.1f} ms, fit {timing['fit_seconds']:.1f} s, "
                  f"run {summary['run_seconds']:.1f} s, {summary['metric']} {summary['student'][summary['metric']]:.4f}")

    def median(way: str, figure) -> float:
        return statistics.median(figure(summary) for summary in results[way])

    step = {way: median(way, lambda s: s["timing"]["step_ms_median"]) for way in WAYS}
    fit = {way: median(way, lambda s: s["timing"]["fit_seconds"]) for way in WAYS}
    whole = {way: median(way, lambda s: s["run_seconds"]) for way in WAYS}
    print(f"\n{args.experiment}, seeds {args.seeds}, medians over seeds")
    print(f"{'':>14} {'step ms':>9} {'fit s':>8} {'run s':>8}  metrics per seed")
    for way in WAYS:
        metrics = [json.dumps(_headline(s)) for s in results[way]]
        print(f"{way:>14} {step[way]:>9.1f} {fit[way]:>8.1f} {whole[way]:>8.1f}  {' '.join(metrics)}")
    print(f"step: online / cached {step['online'] / step['cached']:.3f}x; cached / student-only "
          f"{step['cached'] / step['student_only']:.3f} (goal <= 1.10)")
    print(f"fit: online / cached {fit['online'] / fit['cached']:.3f}x; run: online / cached {whole['online'] / whole['cached']:.3f}x"
          f" (cache build {built['build_seconds']} s once, not in the cached runs)")
    (out / "bench_cache.json").write_text(json.dumps({"build": built, "results": results}, indent=2, default=str))
    print(f"all figures: {out / 'bench_cache.json'}")


if __name__ == "__main__":
    main()
