"""Resident memory of a single-box run over time: does it stay flat once the replay buffer is full?

Starts `run.py` with the given arguments (a real run: every role in its own process), samples every
`--interval` seconds the memory of the node agent and all its role processes, and reads replay's position count
from the run's metrics. Memory is counted as PSS (proportional set size: a shared-memory page mapped by k
processes counts 1/k in each), so the frame stores and rings are counted once, not once per process; RSS is
reported too. The verdict (see `verdict`) compares memory early and late in the run's steady state, after the
buffer filled: growth above `--tolerance` (default 10 %) fails (exit status 1).

Usage:
  python tools/memory_profile.py [--interval 2] [--json] -- --preset cartpole --set replay.capacity=2000 \\
      --max-env-steps 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostinfo import host_info, host_line  # noqa: E402

from speedy.metrics import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tree_memory(root: psutil.Process) -> tuple[float, float, int]:
    """(PSS MiB, RSS MiB, processes) of `root` and its descendants (processes that vanish are skipped)."""
    pss = rss = 0.0
    count = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += getattr(info, "pss", info.rss) / 2**20
        rss += info.rss / 2**20
        count += 1
    return pss, rss, count


def replay_positions(run_dir: Path) -> int:
    """Positions replay holds, from the newest progress record of the node agent (0 before the first)."""
    path = run_dir / "metrics" / "agent.jsonl"
    try:
        records = [r for r in read_metrics(path) if "roles" in r]
    except (OSError, ValueError):
        return 0
    return int(records[-1]["roles"]["replay"]["items"]) if records else 0


def capacity_of(run_dir: Path) -> int:
    config = json.loads((run_dir / "config.json").read_text())
    return int(config["replay"]["capacity"])


def verdict(samples: list[dict], capacity: int, tolerance: float, settle_s: float = 60.0) -> dict:
    """Once the buffer first held ≥ 99 % of its capacity and `settle_s` more seconds passed (first training
    steps, allocator and compile caches warm up): the median PSS of the first and of the last quarter of the
    samples from then on, while all role processes run, and whether the growth between them is within
    `tolerance` (a fraction). The peak is reported too."""
    full = [s for s in samples if s["replay_positions"] >= 0.99 * capacity]
    if not full:
        return {"buffer_full": False, "ok": None, "note": "the buffer never filled: run longer or lower capacity"}
    most = max(s["processes"] for s in samples)
    steady = [s for s in samples if s["t_s"] >= full[0]["t_s"] + settle_s and s["processes"] == most]
    if len(steady) < 8:
        return {"buffer_full": True, "ok": None, "note": f"only {len(steady)} samples after the buffer filled and "
                                                         f"{settle_s:.0f} s settled: run longer"}
    quarter = max(1, len(steady) // 4)
    first = float(np.median([s["pss_mib"] for s in steady[:quarter]]))
    last = float(np.median([s["pss_mib"] for s in steady[-quarter:]]))
    growth = (last - first) / first
    return {"buffer_full": True, "full_at_s": full[0]["t_s"], "steady_from_s": steady[0]["t_s"],
            "steady_until_s": steady[-1]["t_s"], "pss_first_quarter_mib": round(first, 1),
            "pss_last_quarter_mib": round(last, 1), "pss_peak_mib": max(s["pss_mib"] for s in steady),
            "growth": round(growth, 4), "ok": growth <= tolerance, "samples": len(steady)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--tolerance", type=float, default=0.10, help="allowed growth after the buffer is full")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="arguments for run.py (after --)")
    a = ap.parse_args()
    run_args = [x for x in a.run_args if x != "--"]
    run_dir = Path(tempfile.mkdtemp(prefix="memory-profile-"))
    cmd = [sys.executable, str(REPO / "run.py"), "--run-dir", str(run_dir), *run_args]
    host = host_info()
    t0 = time.monotonic()
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    root = psutil.Process(agent.pid)
    samples: list[dict] = []
    try:
        while agent.poll() is None:
            pss, rss, procs = tree_memory(root)
            samples.append({"t_s": round(time.monotonic() - t0, 1), "pss_mib": round(pss, 1),
                            "rss_mib": round(rss, 1), "processes": procs,
                            "replay_positions": replay_positions(run_dir)})
            time.sleep(a.interval)
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(60)
    errors = agent.stderr.read() if agent.stderr else ""
    result = {"host": host, "command": cmd, "capacity": capacity_of(run_dir), "exit_code": agent.returncode,
              "samples": samples}
    result["verdict"] = verdict(samples, result["capacity"], a.tolerance)
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(host_line(host))
        print(f"run.py exit code {agent.returncode}; replay capacity {result['capacity']} positions")
        print(f"{'t (s)':>7} {'PSS MiB':>9} {'RSS MiB':>9} {'procs':>5} {'replay':>8}")
        for s in samples[:: max(1, len(samples) // 30)]:
            print(f"{s['t_s']:>7.0f} {s['pss_mib']:>9.0f} {s['rss_mib']:>9.0f} {s['processes']:>5} "
                  f"{s['replay_positions']:>8}")
        print(f"verdict: {result['verdict']}")
        if agent.returncode:
            print(errors[-2000:])
    ok = result["verdict"].get("ok")
    sys.exit(0 if ok in (True, None) and agent.returncode == 0 else 1)


if __name__ == "__main__":
    main()
