#!/usr/bin/env python
"""Cost of watching a run: tracking overhead on a smoke run, and writing/opening the report of a large run.

    python benchmarks/bench_tracking.py                                  # both parts
    python benchmarks/bench_tracking.py --part tracking --repeats 3 --set federated.backend=inline
    python benchmarks/bench_tracking.py --part report --devices 943 --rounds 100

tracking  ``simulate`` of --config (default simulations/configs/smoke.toml, plus --set overrides) run
          --repeats times with TensorBoard tracking and as often without, interleaved, fresh each time, after
          one untimed warm-up run (imports and per-process caches would otherwise land on the first arm):
          median wall and CPU times and their difference in % (target <= 2%; on a shared machine the A/B
          figures carry the machine's noise, the CPU time less so). Also measured directly in the tracked runs: the time spent inside the
          tracker (opening the writer, every round's scalars, the hparams at the end), as % of the run.
report    a synthetic RUN_DIR of a --devices x --rounds run (config.json of the full ML-100K run, metrics.json,
          history.csv with validation every 5 rounds, one device ledger per device in the real ledger format,
          audit.json): ``fedinterest report RUN_DIR`` as a fresh process (what a user waits for, Python start
          and imports included; with the popularity baseline computed on the ML-100K split, and without), the
          in-process write time (wall and the process's CPU time: the CPU time is what the wall time would be on an
          idle machine, the work being single-threaded), then the page opened in headless Chromium: the load event's
          ``performance.now()`` and the whole browser process (start-up included). Targets: < 2 s each.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server.loop import HISTORY_FIELDS  # noqa: E402
from shared_models import tracking  # noqa: E402
from shared_models.config import build_config, load_config  # noqa: E402
from shared_models.privacy import PrivacyLedger  # noqa: E402


def bench_tracking(config: Path, overrides: list[str], repeats: int, work: Path) -> None:
    from simulations.simulate import simulate

    spent = {"s": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["s"] += time.perf_counter() - t0
        return wrapper

    for name in ("log_round", "watch", "finish", "log"):
        setattr(tracking.Tracker, name, timed(getattr(tracking.Tracker, name)))
    tracking.open_tracker = timed(tracking.open_tracker)
    import server.job
    server.job.open_tracker = tracking.open_tracker

    warm = load_config(config, [*overrides, "tracking.tensorboard=false"])
    simulate(warm, work / "run-warm-up", progress=False, resume=False)  # first-run costs (imports, caches)
    walls: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    inside: list[float] = []
    for i in range(repeats):
        for on in (True, False) if i % 2 == 0 else (False, True):
            cfg = load_config(config, [*overrides, f"tracking.tensorboard={'true' if on else 'false'}"])
            spent["s"] = 0.0
            c0 = _cpu_s()
            t0 = time.perf_counter()
            # a fresh directory per run: a process caches device keys by path (client/secure.py), so a run
            # remade in the same directory in the same process would sign with the previous run's keys
            simulate(cfg, work / f"run-{'on' if on else 'off'}-{i}", progress=False, resume=False)
            wall = time.perf_counter() - t0
            walls[on].append(wall)
            cpus[on].append(_cpu_s() - c0)
            if on:
                inside.append(spent["s"] / wall * 100)
            print(f"  repeat {i + 1}: tracking {'on ' if on else 'off'} {wall:7.2f} s wall, {cpus[on][-1]:7.2f} s CPU"
                  + (f"  (inside the tracker {spent['s'] * 1000:.0f} ms)" if on else ""), flush=True)
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    print(f"tracking: median wall {on:.2f} s with, {off:.2f} s without -> {100 * (on - off) / off:+.2f}% "
          f"(A/B over {repeats} repeats each)")
    on_c, off_c = statistics.median(cpus[True]), statistics.median(cpus[False])
    print(f"tracking: median CPU {on_c:.2f} s with, {off_c:.2f} s without -> {100 * (on_c - off_c) / off_c:+.2f}%")
    print(f"tracking: time inside the tracker {statistics.median(inside):.3f}% of the run (median; max "
          f"{max(inside):.3f}%)")
    tb = work / "run-on-0" / tracking.TRACKING_DIR
    print(f"tracking: event files {sum(p.stat().st_size for p in tb.rglob('events.*'))} bytes in {tb}")


def _cpu_s() -> float:
    """CPU seconds of this process (all its threads): less sensitive than wall time to other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def synth_run(run: Path, *, devices: int, rounds: int, per_round: int) -> None:
    """A finished run's files at the scale of ``devices`` x ``rounds`` (numbers plausible, not trained)."""
    rng = np.random.default_rng(0)
    run.mkdir(parents=True, exist_ok=True)
    cfg = build_config({}, [f"federated.num-server-rounds={rounds}", f"federated.clients-per-round={per_round}",
                            "federated.eval-every=5"]).to_dict()
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    sigma, q, steps = 2.0, 0.1, 4
    schedule = [rng.choice(devices, size=per_round, replace=False) for _ in range(rounds)]
    refusals = rng.integers(0, 3, size=rounds)
    template_path = run / "template-ledger.json"  # one real ledger, long enough for the busiest device
    ledger = PrivacyLedger.open(template_path, delta=1e-5, unit="window", target_epsilon=8.0)
    counts = np.zeros(devices, dtype=int)
    for chosen, refused in zip(schedule, refusals):
        counts[chosen[refused:]] += 1
    for r in range(1, int(counts.max()) + 1):
        ledger.record(round_id=r, noise_multiplier=sigma, sample_rate=q, num_steps=steps)
    template = json.loads(template_path.read_text())
    template_path.unlink()
    eps_after = np.array([0.0] + [e["epsilon"] for e in template["rounds"]])  # epsilon after n rounds
    participations = np.zeros(devices, dtype=int)
    with (run / "history.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        for r, (chosen, refused) in enumerate(zip(schedule, refusals), 1):
            participations[chosen[refused:]] += 1
            eps = eps_after[participations[participations > 0]]
            row = {"round": r, "sampled": per_round, "valid": per_round - refused, "refused": refused, "failed": 0,
                   "rejected": 0, "loss": math.nan, "epsilon_max": eps.max(), "epsilon_mean": eps.mean(),
                   "wall_s": 30 + rng.normal(0, 2)}
            if r % 5 == 0:
                row.update({"recall@10": 0.05 + 0.1 * r / rounds, "recall@20": 0.1 + 0.1 * r / rounds,
                            "ndcg@10": 0.03 + 0.05 * r / rounds, "ndcg@20": 0.04 + 0.05 * r / rounds,
                            "mrr@10": 0.02 + 0.04 * r / rounds})
            w.writerow(row)
    for d in range(devices):
        n = int(participations[d])
        if n == 0:
            continue
        doc = dict(template, rounds=template["rounds"][:n])
        (run / "devices" / str(d)).mkdir(parents=True, exist_ok=True)
        (run / "devices" / str(d) / "ledger.json").write_text(json.dumps(doc, indent=2))
    metrics = {"recall@10": 0.15, "recall@20": 0.2, "ndcg@10": 0.08, "ndcg@20": 0.09, "mrr@10": 0.06}
    eps_all = [float(eps_after[n]) for n in participations if n]
    (run / "metrics.json").write_text(json.dumps({
        "metrics": metrics, "evaluated_devices": devices, "rounds": rounds, "clients_per_round": per_round,
        "num_clients": devices, "config": cfg,
        "privacy": {"mode": "example", "unit": "window", "epsilon": max(eps_all), "delta": 1e-5,
                    "target_epsilon": 8.0, "epsilon_mean": float(np.mean(eps_all))},
        "he": {"enabled": True, "bytes_per_update": 2342992.0, "rejections": []},
        "timing": {"wall_s": 30.0 * rounds}}, indent=2))
    (run / "audit.json").write_text(json.dumps({"verdict": "PASS", "reasons": [], "budget_violations": 0,
                                                "claimed": {"epsilon": max(eps_all), "delta": 1e-5, "unit": "window"},
                                                "cross_check": {"epsilon": max(eps_all)}}))


def bench_report(devices: int, rounds: int, per_round: int, repeats: int, work: Path) -> None:
    from simulations.report.baselines import POPULARITY_FILE
    from simulations.report.browser import check_page, find_chromium
    from simulations.report.write import write_report

    run = work / "big-run"
    synth_run(run, devices=devices, rounds=rounds, per_round=per_round)
    print(f"report: synthetic run {run}: {devices} devices "
          f"({len(list(run.glob('devices/*/ledger.json')))} ledgers), {rounds} rounds")
    cli = [sys.executable, "-m", "simulations.cli.main", "report", str(run)]
    cases = (("popularity computed (first report)", [], True), ("popularity cached (popularity.json)", [], False),
             ("--no-popularity", ["--no-popularity"], False))
    for label, extra, cold in cases:
        walls, cpus = [], []
        for _ in range(repeats):
            if cold:
                (run / POPULARITY_FILE).unlink(missing_ok=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([*cli, *extra], check=True, cwd=REPO, capture_output=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"report: `fedinterest report`, {label}: median wall {statistics.median(walls):.2f} s, CPU "
              f"{statistics.median(cpus):.2f} s (fresh process, {repeats} runs: "
              f"{', '.join(f'{w:.2f}' for w in walls)} s wall)")
    write_report(run, popularity=False)  # imports done
    inproc = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        page = write_report(run, popularity=False)
        inproc.append(time.perf_counter() - t0)
    print(f"report: write_report in-process (no popularity) median {statistics.median(inproc):.2f} s; "
          f"{page.stat().st_size / 1e3:.0f} kB")
    if find_chromium() is None:
        print("report: no Chromium: opening not measured")
        return
    checks = [check_page(page) for _ in range(repeats)]
    print(f"report: opened in headless Chromium: load event at {statistics.median(c.load_ms for c in checks):.0f} ms "
          f"(median), whole browser process {statistics.median(c.browser_s for c in checks):.2f} s; "
          f"{len(checks[0].images)} images, console messages {len(checks[0].console)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("tracking", "report", "both"), default="both")
    ap.add_argument("--config", type=Path, default=REPO / "simulations/configs/smoke.toml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override of --config")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", type=int, default=943)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--clients-per-round", type=int, default=100)
    ap.add_argument("--work", type=Path, default=None, help="directory for the runs (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.part in ("report", "both"):
            bench_report(args.devices, args.rounds, args.clients_per_round, args.repeats, work)
        if args.part in ("tracking", "both"):
            bench_tracking(args.config, args.overrides, args.repeats, work)


if __name__ == "__main__":
    main()
