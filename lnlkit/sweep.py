"""Sweeps: a grid of runs (or a named paper table), skipped when their result file exists.

A sweep is a list of :class:`RunSpec`. Before anything runs, each spec is checked and named
with :func:`lnlkit.run.plan_run`; specs whose result file exists are skipped, so running the
same sweep again continues where it stopped (an interrupted run resumes from its checkpoint).

Executors:

- ``local`` (default): in this process, one run at a time; or ``workers`` processes sharing
  the cores (each gets ``cores // workers`` threads);
- ``slurm``: one Slurm job per run through submitit (a job array), with partition, GPUs and a
  time limit; a job that reaches its limit or is pre-empted is requeued and resumes from its
  checkpoint (``submitit.helpers.Checkpointable``);
- ``submitit-local``: the same jobs as subprocesses of this machine (submitit's local
  executor), to try a Slurm submission before using a cluster.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import submitit

from .methods import METHODS
from .results import results_dir

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: the arguments of :func:`lnlkit.run.run_experiment` that define it."""

    method: str
    dataset: str
    noise: str
    rate: float | None = None
    label_set: str | None = None
    seed: int = 1
    noise_seed: int | None = None
    profile: str = "smoke"
    held_out: float = 0.0
    options: tuple = ()  # the method's options as sorted (name, value) pairs

    def kwargs(self) -> dict:
        return {"method": self.method, "dataset": self.dataset, "noise": self.noise, "rate": self.rate,
                "label_set": self.label_set, "seed": self.seed, "noise_seed": self.noise_seed,
                "profile": self.profile, "held_out": self.held_out, "method_options": dict(self.options)}

    @property
    def method_label(self) -> str:
        """The method with its options and held-out fraction, e.g. 'ce held-out 0.3'."""
        extra = "".join(f" {k}={v}" for k, v in self.options) + (f" held-out {self.held_out}" if self.held_out else "")
        return self.method + extra

    @property
    def setting(self) -> str:
        """The dataset and its noise, e.g. 'cifar10 idn-20%' or 'cifar10 worst'."""
        noise = self.label_set if self.noise == "human" else f"{self.noise}-{round(100 * self.rate)}%"
        return f"{self.dataset} {noise}"

    @property
    def label(self) -> str:
        seeds = f"seed {self.seed}" if self.noise_seed in (None, self.seed) else \
            f"noise seed {self.noise_seed}, seed {self.seed}"
        return f"{self.method_label} · {self.setting} · {self.profile} · {seeds}"


def grid(*, methods, dataset: str, settings, seeds, profile: str, method_options: dict | None = None,
         held_out: dict | float = 0.0) -> list[RunSpec]:
    """Every (seed, setting, method), seeds outermost so that the first seed of every cell finishes first.

    ``settings`` are (noise, rate, label_set) triples; ``method_options`` maps a method to its
    options; ``held_out`` is one fraction or a fraction per method.
    """
    method_options = method_options or {}
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    specs = []
    for seed in seeds:
        for noise, rate, label_set in settings:
            for method in methods:
                fraction = held_out.get(method, 0.0) if isinstance(held_out, dict) else held_out
                specs.append(RunSpec(method, dataset, noise, rate, label_set, int(seed), None, profile, fraction,
                                     tuple(sorted(method_options.get(method, {}).items()))))
    return specs


# The paper tables a sweep can rerun by name. Only methods that lnlkit implements are listed;
# ``seeds`` and ``profile`` are defaults that the command line may change.
CIFAR10_IDN = [("idn", rate, None) for rate in (0.2, 0.3, 0.4, 0.45, 0.5)]
# OSA's proxy estimator for CIFAR-10: the cpu profile's network, 10 epochs on the clean 30 %.
OSA_PROXY = {"osa": {"estimator": "proxy", "proxy_model": "compact_resnet", "proxy_epochs": 10}}
# EchoAlign in the cpu profile: the generator's epochs cut to fit two cores (the method's defaults
# are 200 and 100), EchoSelect's encoder = OSA's proxy estimator.
ECHOALIGN_CPU = {"echoalign": {"base_epochs": 10, "control_epochs": 5, "proxy_model": "compact_resnet",
                               "proxy_epochs": 10}}
# Method variants of a table: "ce@held_out" trains CE on the same images as the runs that hold a clean
# 30 % aside; "ce@clean_held_out" trains it on that clean 30 % alone (the control for OSA's proxy and
# EchoAlign's generator).
VARIANT_OPTIONS = {"held_out": {}, "clean_held_out": {"clean_reference": "only"}}
HELD_OUT_METHODS = ("osa", "echoalign")  # they learn from a clean 30 % held out
TABLES = {
    "causalnl-table3": dict(
        about="CausalNL Table 3: CIFAR-10 with instance-dependent noise, 20-50 %",
        methods=["ce", "mixup", "coteaching", "causalnl"], dataset="cifar10", settings=CIFAR10_IDN),
    "dtm-table1": dict(
        about="DTM Table 1: CIFAR-10 with instance-dependent noise, 10-50 %",
        methods=["ce", "volminnet", "dtm"], dataset="cifar10",
        settings=[("idn", rate, None) for rate in (0.1, 0.2, 0.3, 0.4, 0.5)]),
    "dtm-table2": dict(
        about="DTM Table 2: CIFAR-10N human labels (aggre, random1-3, worst)",
        methods=["ce", "coteaching", "volminnet", "dtm"], dataset="cifar10",
        settings=[("human", None, s) for s in ("aggre", "random1", "random2", "random3", "worst")]),
    "campaign": dict(
        about="The cpu-profile campaign: CE, Co-teaching, CausalNL and OSA (proxy, with CE on the same "
              "70 % as its baseline) on CIFAR-10 IDN-20 %, IDN-40 % and CIFAR-10N worst",
        methods=["ce", "coteaching", "causalnl", "osa", "ce@held_out"], dataset="cifar10",
        settings=[("idn", 0.2, None), ("idn", 0.4, None), ("human", None, "worst")],
        seeds=(1, 2, 3), profile="cpu"),
    "echoalign-campaign": dict(
        about="The cpu-profile runs of the EchoAlign chapter: EchoAlign (generator trained here), CE on the "
              "same 70 % and CE on the clean 30 % alone, on CIFAR-10 IDN-20 %",
        methods=["echoalign", "ce@held_out", "ce@clean_held_out"], dataset="cifar10",
        settings=[("idn", 0.2, None)], seeds=(1, 2, 3), profile="cpu"),
    "dtm-campaign": dict(
        about="The cpu-profile runs of the DTM chapter: VolMinNet and DTM on CIFAR-10 IDN-20 % and IDN-40 %",
        methods=["volminnet", "dtm"], dataset="cifar10", settings=[("idn", 0.2, None), ("idn", 0.4, None)],
        seeds=(1, 2, 3), profile="cpu"),
}


def table_specs(name: str, *, seeds=None, profile: str | None = None) -> list[RunSpec]:
    """The runs of a named table (see ``TABLES``)."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose from {sorted(TABLES)}")
    table = TABLES[name]
    seeds = seeds or table.get("seeds", (1, 2, 3))
    profile = profile or table.get("profile", "cpu")
    specs = []
    for method in table["methods"]:
        base, _, variant = method.partition("@")
        held = 0.3 if (variant or base in HELD_OUT_METHODS) else 0.0
        options = OSA_PROXY | ECHOALIGN_CPU | {"ce": VARIANT_OPTIONS[variant] if variant else {}}
        specs += grid(methods=[base], dataset=table["dataset"], settings=table["settings"], seeds=seeds,
                      profile=profile, method_options=options, held_out=held)
    order = {(s.seed, s.noise, s.rate, s.label_set): i for i, s in enumerate(grid(
        methods=["ce"], dataset=table["dataset"], settings=table["settings"], seeds=seeds, profile=profile))}
    return sorted(specs, key=lambda s: order[(s.seed, s.noise, s.rate, s.label_set)])


@dataclass
class SweepReport:
    """What a sweep did: runs finished now, skipped (result file existed) and failed."""

    finished: list = field(default_factory=list)  # (spec, result path)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (spec, error message)

    def summary(self) -> str:
        return (f"{len(self.finished)} run(s) finished, {len(self.skipped)} skipped (result file exists), "
                f"{len(self.failed)} failed")


def run_one(kwargs: dict, out_dir: str, threads: int | None = None, progress: bool = False) -> str:
    """Run one spec (in this process or a worker/job); return its result file. Resumes from a checkpoint."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .run import run_experiment

    result = run_experiment(**kwargs, out_dir=out_dir, progress=progress)
    return str(result.path)


class RunJob(submitit.helpers.Checkpointable):
    """A submitit job that Slurm may requeue (time limit, pre-emption): the run resumes from its checkpoint."""

    def __call__(self, kwargs: dict, out_dir: str) -> str:
        return run_one(kwargs, out_dir)


def sweep(specs: list[RunSpec], *, out_dir: str | Path | None = None, executor: str = "local", workers: int = 1,
          logs: str | Path = "sweep-logs", partition: str | None = None, gpus: int = 0, time_min: int = 120,
          cpus: int | None = None, mem_gb: float | None = None, dry_run: bool = False, progress: bool = True,
          echo=print) -> SweepReport:
    """Run ``specs`` that have no result file yet; print progress and return what happened.

    ``progress`` shows each local run's progress bar (epochs) in the terminal; workers and jobs
    report only when a run ends.
    """
    from .run import plan_run

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {EXECUTORS}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out_dir = Path(out_dir) if out_dir else results_dir()
    # Every spec is checked before anything runs: a typo in the last one must not stop a sweep hours in.
    plans = [plan_run(**spec.kwargs(), out_dir=out_dir) for spec in specs]
    report = SweepReport()
    pending = []
    for spec, plan in zip(specs, plans):
        if plan.result_path.exists():
            report.skipped.append(spec)
        else:
            pending.append(spec)
    echo(f"sweep: {len(specs)} run(s), {len(report.skipped)} done before, {len(pending)} to run "
         f"({executor}{f', {workers} workers' if executor == 'local' and workers > 1 else ''}); results in {out_dir}")
    if dry_run:
        for spec in pending:
            echo(f"  to run: {spec.label}")
        return report
    if not pending:
        return report
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def done(spec, path=None, error=None):
        count = len(report.finished) + len(report.failed) + 1
        minutes = (time.perf_counter() - started) / 60
        if error is None:
            report.finished.append((spec, path))
            echo(f"[{count}/{len(pending)}] done   {spec.label} -> {Path(path).name} ({minutes:.1f} min so far)")
        else:
            report.failed.append((spec, error))
            echo(f"[{count}/{len(pending)}] FAILED {spec.label}: {error}")

    try:
        if executor == "local" and workers == 1:
            for spec in pending:
                echo(f"running {spec.label}")
                try:
                    done(spec, run_one(spec.kwargs(), str(out_dir), progress=progress))
                except Exception as error:  # noqa: BLE001 -- one failed run must not stop a sweep of days
                    done(spec, error=f"{type(error).__name__}: {error}")
        elif executor == "local":
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_one, spec.kwargs(), str(out_dir), threads): spec for spec in pending}
                for future in as_completed(futures):
                    error = future.exception()
                    done(futures[future], None if error else future.result(),
                         f"{type(error).__name__}: {error}" if error else None)
        else:
            _submit(pending, out_dir, done, cluster="slurm" if executor == "slurm" else "local", logs=logs,
                    partition=partition, gpus=gpus, time_min=time_min, cpus=cpus, mem_gb=mem_gb, echo=echo)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{report.summary()}. Run the same command again to continue: finished runs are "
                                "skipped and an interrupted one resumes from its checkpoint.") from None
    return report


def sweep_progress(specs: list[RunSpec], out_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per spec: its method (with options), setting, profile, seed, result file and whether it exists.

    What a campaign has done and what remains, without running anything (the rows of a dry run).
    Two tables may share a run; its result file is the same, so count distinct files.
    """
    from .run import plan_run

    rows = []
    for spec in specs:
        path = plan_run(**spec.kwargs(), out_dir=out_dir or results_dir()).result_path
        rows.append({"method": spec.method_label, "setting": spec.setting, "profile": spec.profile,
                     "seed": spec.seed, "done": path.exists(), "file": path.name})
    return pd.DataFrame(rows)


def sweep_summary(specs: list[RunSpec], out_dir: str | Path | None = None) -> str:
    """Test accuracy (%) per cell of the sweep, mean ± 95 % CI over the seeds whose result files exist."""
    import json

    from .results import results_frame
    from .stats import mean_ci

    out_dir = Path(out_dir or results_dir())
    progress = sweep_progress(specs, out_dir)
    records = [json.loads((out_dir / name).read_text()) | {"file": name} for name in progress["file"][progress["done"]]]
    if not records:
        return "no result files yet"
    frame = results_frame(records)
    rows = []
    for (dataset, noise, method, profile, held), cell in frame.groupby(
            ["dataset", "noise", "method", "profile", "held_out"], sort=False):
        rows.append({"data": dataset, "noise": noise, "method": method + (f" (held-out {held})" if held else ""),
                     "profile": profile, "seeds": len(cell), "final epoch": mean_ci(cell["final"]).format(2),
                     "last-10 mean": mean_ci(cell["last10_mean"]).format(2),
                     "minutes per run": f"{cell['wall_time_s'].mean() / 60:.1f}"})
    return "test accuracy (%), mean ± 95 % CI over seeds:\n" + pd.DataFrame(rows).to_string(index=False)


def _submit(pending, out_dir, done, *, cluster, logs, partition, gpus, time_min, cpus, mem_gb, echo):
    executor = submitit.AutoExecutor(folder=Path(logs) / "%j", cluster=cluster)
    parameters = {"name": "lnlkit", "timeout_min": time_min, "gpus_per_node": gpus, "tasks_per_node": 1}
    if cpus:
        parameters["cpus_per_task"] = cpus
    if mem_gb:
        parameters["mem_gb"] = mem_gb
    if partition:
        parameters["slurm_partition"] = partition
    executor.update_parameters(**parameters)
    job = RunJob()
    with executor.batch():
        jobs = [executor.submit(job, spec.kwargs(), str(out_dir)) for spec in pending]
    by_job = {j.job_id: spec for j, spec in zip(jobs, pending)}
    echo(f"submitted {len(jobs)} job(s) to {cluster}; logs in {logs}/<job id>/")
    for finished in submitit.helpers.as_completed(jobs):
        spec = by_job[finished.job_id]
        try:
            done(spec, finished.result())
        except Exception as error:  # a failed job: its traceback is in the job's log
            done(spec, error=f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error) else ''} "
                             f"(log: {logs}/{finished.job_id}/)")


__all__ = ["EXECUTORS", "RunSpec", "SweepReport", "TABLES", "grid", "run_one", "sweep", "sweep_progress", "sweep_summary",
           "table_specs"]
