"""Many logs at once: `perception replay --ray [ADDRESS] LOGS... [--out-dir DIR]`.

One Ray task per log, each with its own perceiver, writing DIR/<log>.mcap and DIR/<log>.jsonl;
the driver prints a table across all logs and writes DIR/summary.json. With no address a local
Ray instance is started on 127.0.0.1 (no dashboard). Several logs without --ray are replayed one
after another in this process, with the same outputs and summary.

On a real cluster every node needs this package installed (`pip install perception[fleet]`) and
the log paths must be readable from the nodes (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path

from perception.errors import PerceptionError
from perception.logs.files import write_atomically
from perception.logs.outputs import OutputPaths
from perception.logs.replay import ReplayOptions, replay_log

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_PASSED_TO_WORKERS = ("PERCEPTION_CACHE_DIR", "PERCEPTION_MODELS_MIRROR")


def replay_logs(logs: list[Path], models: list[str], options: ReplayOptions,
                out_dir: Path | None, address: str | None) -> tuple[list[dict], float]:
    """Replay every log (on Ray at `address`, "local" for a local instance, or here one after
    another with None); a summary per log and the wall time. With `out_dir`, each log writes
    out_dir/<log>.mcap and out_dir/<log>.jsonl, and out_dir/summary.json holds the summaries."""
    jobs = [(str(log), job_options(options, out_dir, log_stem(log))) for log in logs]
    started = time.perf_counter()
    if address is None:
        summaries = [replay_one(log, models, job) for log, job in jobs]
    else:
        summaries = run_on_ray(address, models, jobs)
    wall_s = time.perf_counter() - started
    if out_dir is not None:
        write_atomically(out_dir / "summary.json",
                         json.dumps({"wall_s": wall_s, "logs": summaries}, indent=2))
    return summaries, wall_s


def output_files(logs: list[Path], out_dir: Path) -> list[Path]:
    """The files `replay_logs` will write for these logs into `out_dir`."""
    return [path for log in logs
            for path in job_options(ReplayOptions(), out_dir, log_stem(log)).outputs.files()]


def exit_code(summaries: list[dict]) -> int:
    """0 when every log was fully processed, else 2 if any log was unusable, else 3."""
    codes = {s["exit_code"] for s in summaries}
    return 2 if 2 in codes else 3 if 3 in codes else 0


def log_stem(log: Path) -> str:
    return log.name if log.is_dir() else log.stem


def job_options(options: ReplayOptions, out_dir: Path | None, stem: str) -> ReplayOptions:
    outputs = OutputPaths(mcap=out_dir / f"{stem}.mcap", jsonl=out_dir / f"{stem}.jsonl",
                          mcap_profile=options.outputs.mcap_profile) \
        if out_dir is not None else OutputPaths()
    return dataclasses.replace(options, progress=False, outputs=outputs)


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
            "wall_s": report.wall_s, "outputs": [str(p) for p in options.outputs.files()]}


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
