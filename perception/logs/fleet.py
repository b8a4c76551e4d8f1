"""Many logs: `perception replay --ray [ADDRESS] LOGS... [--out-dir DIR]`.

One Ray task per log, each with its own perceiver, writing DIR/<log>.mcap and DIR/<log>.jsonl;
the driver prints a table across all logs and writes DIR/summary.json. With no address a local
Ray instance is started on 127.0.0.1 (no dashboard). Several logs without --ray are replayed one
after another in this process, with the same outputs and summary.

On a real cluster every node needs this package installed (`pip install perception[fleet]`) and
the log paths must be readable from the nodes (a shared filesystem).
Exit code: 0 when every log was fully processed, else 2 if any log was unusable, else 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

from perception.commands.replay import (
    ReplayOptions,
    check_outputs,
    model_names,
    options_from,
    replay_log,
)
from perception.errors import PerceptionError
from perception.logs.outputs import atomic_output

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_PASSED_TO_WORKERS = ("PERCEPTION_CACHE_DIR", "PERCEPTION_MODELS_MIRROR")


def main(args: argparse.Namespace) -> int:
    logs, address = list(args.logs), args.ray
    if address not in (None, "local") and Path(address).exists():  # `--ray a.mcap b.mcap`
        logs, address = [Path(address), *logs], "local"
    if args.out or args.json or args.video:
        raise PerceptionError("with several logs or --ray, use --out-dir DIR for the outputs "
                              "(DIR/<log>.mcap and DIR/<log>.jsonl)")
    options = options_from(args)
    if options.loop:
        raise PerceptionError("--loop replays one log; it does not combine with several")
    jobs = [(str(log), job_options(options, args.out_dir, log_stem(log))) for log in logs]
    if args.out_dir is not None:
        try:
            args.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PerceptionError(f"{args.out_dir}: cannot create the folder "
                                  f"({error.strerror})") from None
        # two logs of one name, or --out-dir the logs' own folder
        check_outputs(logs, [path for _, job in jobs for path in (job.out, job.json)])
    models = model_names(args.models)
    started = time.perf_counter()
    if address is None:
        summaries = [replay_one(log, models, job) for log, job in jobs]
    else:
        summaries = run_on_ray(address, models, jobs)
    wall_s = time.perf_counter() - started
    print(fleet_table(summaries, wall_s), file=sys.stderr)
    if args.out_dir is not None:
        with atomic_output(args.out_dir / "summary.json") as temp:
            temp.write_text(json.dumps({"wall_s": wall_s, "logs": summaries}, indent=2))
    codes = {s["exit_code"] for s in summaries}
    return 2 if 2 in codes else 3 if 3 in codes else 0


def log_stem(log: Path) -> str:
    return log.name if log.is_dir() else log.stem


def job_options(options: ReplayOptions, out_dir: Path | None, stem: str) -> ReplayOptions:
    outputs = {"out": out_dir / f"{stem}.mcap", "json": out_dir / f"{stem}.jsonl"} \
        if out_dir is not None else {}
    return dataclasses.replace(options, progress=False, **outputs)


def replay_one(log: str, models: list[str], options: ReplayOptions,
               workers: int | None = None) -> dict:
    """Replay one log with a fresh perceiver of `workers` threads (default: one per core); a
    summary dict whatever happens to the log."""
    try:
        report = replay_log(Path(log), models, options, workers)
    except PerceptionError as error:
        return {"log": log, "exit_code": 2, "error": str(error), "read": 0, "processed": 0,
                "dropped": 0, "frames_per_s": 0.0, "wall_s": 0.0}
    return {"log": log, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "exit_code": report.exit_code, "error": report.error,
            "read": report.read, "processed": report.processed, "dropped": report.dropped,
            "deadline_misses": report.deadline_misses, "frames_per_s": report.frames_per_s,
            "wall_s": report.wall_s, "outputs": [str(p) for p in (options.out, options.json) if p]}


def run_on_ray(address: str, models: list[str], jobs: list[tuple[str, ReplayOptions]]) -> list:
    try:
        import ray
    except ModuleNotFoundError:
        raise PerceptionError("--ray needs Ray: pip install 'perception[fleet]'") from None
    env = {name: os.environ[name] for name in ENV_PASSED_TO_WORKERS if name in os.environ}
    if address == "local":
        # Workers of a local instance inherit this environment: let them import this checkout.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1",
                 num_cpus=os.cpu_count(), log_to_driver=False,
                 runtime_env={"env_vars": env})
    else:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except Exception as error:
            raise PerceptionError(f"cannot connect to the Ray cluster at {address}: "
                                  f"{error}") from None
    try:
        # One core per task and one model thread per task: Ray runs as many logs at once as
        # there are cores, without oversubscribing them.
        task = ray.remote(num_cpus=1)(replay_one)
        return ray.get([task.remote(log, models, options, workers=1) for log, options in jobs])
    finally:
        ray.shutdown()


def fleet_table(summaries: list[dict], wall_s: float) -> str:
    width = max(len(Path(s["log"]).name) for s in summaries) + 2
    lines = [f"{'log':<{width}}{'read':>7}{'processed':>10}{'dropped':>8}{'frames/s':>9}"
             f"{'exit':>5}"]
    for s in summaries:
        lines.append(f"{Path(s['log']).name:<{width}}{s['read']:>7d}{s['processed']:>10d}"
                     f"{s['dropped']:>8d}{s['frames_per_s']:>9.1f}{s['exit_code']:>5d}")
        if s["error"]:
            lines.append(f"  {s['error']}")
    processed = sum(s["processed"] for s in summaries)
    lines.append(f"{len(summaries)} logs, {processed} frames processed in {wall_s:.1f} s "
                 f"({processed / wall_s if wall_s else 0:.1f} frames/s across all)")
    return "\n".join(lines)
