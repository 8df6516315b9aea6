"""The ``distill-report`` command.

    distill-report sweep outputs/multiruns/2026-01-31/12-00-00               # report.md, report.csv, report.png
    distill-report sweep SWEEP_DIR --metric agreement
    distill-report sweep SWEEP_DIR --metric student.latency_ms --lower-is-better --out reports/
    distill-report compression RUN_OR_SWEEP_DIR... --out reports/compression   # size vs quality
"""

from __future__ import annotations

import argparse
import sys

from distill.sweep.collect import SweepError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-report", description="Reports over finished distill runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser(
        "sweep",
        help="table and plot of a `distill -m ...` sweep folder",
        description="Collect every run under SWEEP_DIR (its .hydra/overrides.yaml and metrics.json), aggregate "
        "runs that differ only in `seed` as mean ± std, and write report.md, report.csv and report.png.",
    )
    sweep.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder, e.g. outputs/multiruns/<date>/<time>")
    sweep.add_argument(
        "--metric",
        help="a student figure (accuracy, f1, agreement (older runs: teacher_agreement), latency_ms), a top-level one (retention, "
        "speedup, compression) or a dotted path (teacher.accuracy); default: the runs' headline metric",
    )
    sweep.add_argument("--lower-is-better", action="store_true", help="the best setting has the lowest mean")
    sweep.add_argument("--out", metavar="DIR", help="where to write the report files (default: SWEEP_DIR)")
    compression = commands.add_parser(
        "compression",
        help="quantized/pruned students: format, size on disk, latency, task metric, agreement",
        description="One row per setting (runs differing only in `seed` are aggregated as mean ± std): format, "
        "parameters, size on disk, CPU latency at batch 1 and 32 (timed here, interleaved, in one process), task "
        "metric, agreement with the teacher, retention; and the task metric against size as report.png.",
    )
    compression.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders or sweep folders")
    compression.add_argument("--out", metavar="DIR", required=True, help="where to write report.md/.csv/.png")
    compression.add_argument("--rounds", type=int, default=20, help="interleaved latency rounds (0: no latency)")
    compression.add_argument(
        "--baseline", metavar="SETTING", help="a setting (its overrides as the table prints them, or its sweep "
        "folder) to compare every other setting with, paired by seed (e.g. the fp32 student)",
    )
    return parser


def _compression(args) -> int:
    from distill.sweep.compression import report_compression

    try:
        _, written = report_compression(args.run_dirs, args.out, rounds=args.rounds, baseline=args.baseline)
    except SweepError as error:
        print(f"distill-report: error: {error}", file=sys.stderr)
        return 2
    print(written[0].read_text())
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "compression":
        return _compression(args)
    from distill.sweep.report import report_sweep  # matplotlib and Hydra's parser: after --help
    from distill.sweep.tables import best_line, settings_table

    try:
        report = report_sweep(args.sweep_dir, args.metric, args.lower_is_better, args.out)
    except SweepError as error:
        print(f"distill-report: error: {error}", file=sys.stderr)
        return 2
    sweep, summary = report.sweep, report.summary
    refused = f", {len(sweep.refused)} refused by validation" if sweep.refused else ""
    print(f"{len(sweep.complete)} run(s) complete, {len(sweep.missing)} missing{refused} under {sweep.root}")
    for run in sweep.missing:
        print(f"  missing: {run.name}: {run.problem}")
    for run in sweep.refused:
        print(f"  refused: {run.name}: {run.problem}")
    print("\n".join(settings_table(summary)))
    print(best_line(summary))
    for path in (report.markdown, report.csv, report.plot):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
