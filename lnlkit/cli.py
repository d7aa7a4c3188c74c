"""Command line: ``python -m lnlkit noise|run|sweep|samples|book ...``."""

from __future__ import annotations

import argparse
import errno
import json
import sys

from .data import CIFAR_N_LABEL_SETS, DATASETS, DataUnavailableError
from .methods import METHODS
from .noise import KINDS
from .profiles import PROFILES


def _noise_command(args) -> None:
    from .data import load_dataset
    from .noise import check_noise_arguments, make_noise

    from pathlib import Path

    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name, e.g. {Path(args.out) / 'labels.npz'}")
    check_noise_arguments(args.kind, args.rate, args.seed, args.label_set)
    train = load_dataset(args.dataset).train
    noisy = make_noise(args.kind, train, rate=args.rate, seed=args.seed, label_set=args.label_set)
    noisy.save(args.out)
    print(f"wrote {args.out}: {len(noisy.noisy)} labels, {args.kind} noise, achieved rate {noisy.achieved_rate:.4f}")


def _run_command(args) -> None:
    from .run import run_experiment

    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.device:
        overrides["device"] = args.device
    if args.cpu_bf16:
        overrides["cpu_bf16"] = True
    options = {name: _parse_value(value) for name, value in (args.option or [])}
    result = run_experiment(method=args.method, dataset=args.dataset, noise=args.noise, rate=args.rate,
                            label_set=args.label_set, noise_seed=args.noise_seed, seed=args.seed,
                            profile=args.profile, held_out=args.held_out, method_options=options,
                            config_overrides=overrides, out_dir=args.out_dir)
    record, final = result.record, result.final
    for stage in record["stages"]:
        print(f"stage {stage['name']}: {stage['status']} ({stage['build_s']:.1f} s to build; key {stage['key']})")
    selected = (f", at min. noisy-val loss {100 * final['test_acc_at_min_val_loss']:.2f} %"
                if "test_acc_at_min_val_loss" in final else "")
    print(f"{args.method} on {args.dataset}: last-10 mean {100 * final['test_acc_last10_mean']:.2f} %{selected}, "
          f"oracle best epoch {100 * final['test_acc_oracle_best']:.2f} % "
          f"({record['wall_time_s']:.0f} s on {record['device']})")
    if record.get("transition"):
        scores = record["transition"]["scores"]
        others = ", ".join(f"{name.replace('_', ' ')} {s['tv']:.3f}" for name, s in scores.items() if name != "estimate")
        print(f"T(x) against {record['transition']['truth']}: total variation {scores['estimate']['tv']:.3f} "
              f"({others}); main flip class right for {100 * scores['estimate']['main_flip']:.1f} %")
    print(f"wrote {result.path}")


def _sweep_command(args) -> None:
    from .sweep import TABLES, grid, sweep, sweep_summary, table_specs

    if args.list_tables:
        for name, table in TABLES.items():
            print(f"{name}: {table['about']}")
        return
    if args.table:
        if args.methods or args.noise or args.option:
            raise ValueError("--table fixes the methods, noise and options; leave out --methods, --noise and --option")
        specs = table_specs(args.table, seeds=args.seeds, profile=args.profile)
    else:
        if not args.methods or not args.noise:
            raise ValueError("give --table NAME, or a grid: --methods ... --noise KIND (--rates ... or --label-sets ...)")
        if args.noise == "human":
            if not args.label_sets:
                raise ValueError("human noise needs --label-sets (e.g. worst aggre)")
            settings = [("human", None, label_set) for label_set in args.label_sets]
        else:
            if not args.rates:
                raise ValueError(f"{args.noise} noise needs --rates (e.g. --rates 0.2 0.4)")
            settings = [(args.noise, rate, None) for rate in args.rates]
        options: dict = {}
        for name, value in args.option or []:
            method, _, option = name.rpartition(".")
            for target in ([method] if method else args.methods):
                options.setdefault(target, {})[option] = _parse_value(value)
        specs = grid(methods=args.methods, dataset=args.dataset, settings=settings, seeds=args.seeds or [1],
                     profile=args.profile or "smoke", method_options=options, held_out=args.held_out)
    report = sweep(specs, out_dir=args.out_dir, executor=args.executor, workers=args.workers, logs=args.logs,
                   partition=args.partition, gpus=args.gpus, time_min=args.time, cpus=args.cpus,
                   mem_gb=args.mem_gb, dry_run=args.dry_run)
    print(report.summary())
    if not args.dry_run:
        print(sweep_summary(specs, args.out_dir))
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} run(s) failed (listed above); the others are kept")


def _samples_command(args) -> None:
    from pathlib import Path

    import numpy as np

    from .files import atomic_write
    from .methods.echoalign import edit_samples
    from .results import provenance

    result = Path(args.result)
    if not result.is_file():
        raise ValueError(f"no result file {result}")
    record = json.loads(result.read_text())
    samples = edit_samples(record, per_group=args.per_group)
    about = {"result_file": result.name, "judge": samples.pop("judge"),
             "judge_test_accuracy": samples.pop("judge_test_accuracy"), "provenance": provenance()}
    out = Path(args.out) if args.out else result.parent / "samples" / f"{result.stem}.npz"
    with atomic_write(out) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, about=np.array(json.dumps(about)), **samples)
    for row in about["judge"]:
        print(f"label {row['labels']} ({row['count']} images): the judge reads the noisy label in "
              f"{100 * row['original reads noisy label']:.1f} % of the originals and "
              f"{100 * row['edit reads noisy label']:.1f} % of the edits")
    print(f"wrote {out}")


def _parse_value(text: str):
    """'true' -> True, '0.1' -> 0.1, 'mse' -> 'mse' (JSON where it parses, else the string)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _book_command(args) -> None:
    from .book import main as build_book

    build_book(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lnlkit", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--dataset", choices=DATASETS, default="cifar10")
        p.add_argument("--rate", type=float, help="noise rate in [0, 1) (not for human labels)")
        p.add_argument("--seed", type=int, default=1, help="noise seed (noise) or training seed (run)")
        p.add_argument("--label-set", choices=sorted(CIFAR_N_LABEL_SETS), help="CIFAR-N labels for --kind human")

    noise = sub.add_parser("noise", help="write noisy labels to an .npz file")
    common(noise)
    noise.add_argument("--kind", choices=KINDS, required=True)
    noise.add_argument("--out", required=True, help="output .npz (noisy_labels, clean_labels, achieved_rate)")
    noise.set_defaults(func=_noise_command)

    run = sub.add_parser("run", help="train one method and write a result file under results/")
    common(run)
    run.add_argument("--method", required=True, choices=sorted(METHODS))
    run.add_argument("--noise", choices=KINDS, required=True)
    run.add_argument("--noise-seed", type=int, help="seed of the noise draw and the splits (default: --seed)")
    run.add_argument("--profile", choices=PROFILES, default="smoke")
    run.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    run.add_argument("--cpu-bf16", action="store_true",
                     help="bfloat16 autocast on CPU (faster on CPUs with AVX512-BF16 or AMX; another run, "
                          "with its own result file)")
    run.add_argument("--out-dir", help="results folder (default: $LNLKIT_RESULTS, else ./results)")
    run.add_argument("--option", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="a method option, e.g. --option official_code true (CausalNL)")
    run.add_argument("--held-out", type=float, default=0.0, metavar="FRACTION",
                     help="keep this fraction of the training set aside, clean, for a proxy estimator "
                          "(OSA: --option estimator proxy); no method trains on it")
    run.set_defaults(func=_run_command)

    from .sweep import EXECUTORS, TABLES

    sweep = sub.add_parser("sweep", help="run a grid of runs or a named paper table; finished runs are skipped",
                           description="Runs whose result file exists are skipped and an interrupted run resumes "
                                       "from its checkpoint, so the same command continues a sweep.")
    sweep.add_argument("--table", choices=sorted(TABLES), help="a paper table (see --list-tables)")
    sweep.add_argument("--list-tables", action="store_true", help="list the named tables and exit")
    sweep.add_argument("--methods", nargs="+", choices=sorted(METHODS))
    sweep.add_argument("--dataset", choices=DATASETS, default="cifar10")
    sweep.add_argument("--noise", choices=KINDS)
    sweep.add_argument("--rates", nargs="+", type=float)
    sweep.add_argument("--label-sets", nargs="+", choices=sorted(CIFAR_N_LABEL_SETS), help="for --noise human")
    sweep.add_argument("--seeds", nargs="+", type=int, help="training seeds (= noise seeds); default 1 (table: 1 2 3)")
    sweep.add_argument("--profile", choices=PROFILES, help="default smoke (table: its own, cpu)")
    sweep.add_argument("--held-out", type=float, default=0.0, metavar="FRACTION")
    sweep.add_argument("--option", nargs=2, action="append", metavar=("[METHOD.]NAME", "VALUE"),
                       help="a method option for every method, or for one: --option osa.estimator proxy")
    sweep.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: this machine; slurm: one job per run through submitit; submitit-local: "
                            "submitit's jobs as local subprocesses")
    sweep.add_argument("--workers", type=int, default=1, help="local: runs at a time, sharing the cores")
    sweep.add_argument("--partition", help="slurm partition")
    sweep.add_argument("--gpus", type=int, default=0, help="slurm: GPUs per job")
    sweep.add_argument("--cpus", type=int, help="slurm: CPUs per job")
    sweep.add_argument("--mem-gb", type=float, help="slurm: memory per job")
    sweep.add_argument("--time", type=int, default=120, metavar="MINUTES",
                       help="slurm: time limit per job (a job that reaches it is requeued and resumes)")
    sweep.add_argument("--logs", default="sweep-logs", help="submitit: folder for job logs")
    sweep.add_argument("--out-dir", help="results folder (default: $LNLKIT_RESULTS, else ./results)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs still to do; run nothing")
    sweep.set_defaults(func=_sweep_command)

    samples = sub.add_parser("samples", help="sample edits of a finished EchoAlign run and what a judge reads in "
                                             "all its edits (from the run's cached stages)")
    samples.add_argument("result", help="the run's result file (results/....json)")
    samples.add_argument("--per-group", type=int, default=6,
                         help="correctly labelled and mislabelled images to keep, each (default 6)")
    samples.add_argument("--out", help="output .npz (default: results/samples/<result name>.npz)")
    samples.set_defaults(func=_samples_command)

    book = sub.add_parser("book", help="execute the chapters with papermill and build the HTML book")
    book.add_argument("--profile", choices=PROFILES, default="smoke")
    book.add_argument("--chapters", nargs="*", help="chapter names (default: all in _toc.yml)")
    book.add_argument("--execute-only", action="store_true", help="execute chapters, do not build HTML")
    book.add_argument("--jobs", type=int, default=1,
                      help="chapters executed at a time, each with an equal share of the cores (default 1)")
    book.add_argument("--render-only", action="store_true",
                      help="build HTML from the chapters executed last (_build/notebooks), without executing")
    book.add_argument("--inspect", action="store_true",
                      help="open every built page in headless Chromium, offline: report cut-off code, outputs "
                           "and equations, raw TeX, captions; screenshots in _build/screenshots")
    book.add_argument("--publish", action="store_true",
                      help="push the built HTML (_build/html) to the gh-pages branch of origin with ghp-import")
    book.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                      help="a chapter parameter, as papermill's -p (value parsed as YAML)")
    book.set_defaults(func=_book_command)
    return parser


def main(argv=None) -> int:
    """Exit codes: 0 done; 2 a mistake in the command (the message names it and the fix); 1 a fault
    outside the user's control (missing or damaged data, a full disk, ...); 130 interrupted.
    Tracebacks only with ``--debug``."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt as interrupt:
        print(f"interrupted. {interrupt}".strip() if str(interrupt) else "interrupted.", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2 if isinstance(error, (ValueError, PermissionError)) else 1
    return 0


def describe_error(error: Exception) -> str:
    """One or two lines for a user: what went wrong, where, and what to do."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        return f"the disk is full{where}; free some space and run the command again (files written before are intact)"
    if isinstance(error, (ValueError, PermissionError, DataUnavailableError)):
        return str(error)
    if isinstance(error, OSError):
        return f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}"
    return f"{type(error).__name__}: {error} (run again with --debug for the traceback)"
