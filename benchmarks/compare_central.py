#!/usr/bin/env python
"""Compare `fedinterest train-central` result files: a table of both protocols and paired intervals.

Each ``--runs LABEL=FILE [FILE ...]`` is one configuration over seeds: train-central result JSONs, or
bench_peers run files (``runs/bench-peers/ease-seed0.json``); both carry each user's test rank under both
protocols. Prints a markdown table (mean ± std over seeds of Recall@10, NDCG@10, MRR@10,
masked and unmasked, and the mean wall seconds), then, for every other label against ``--ref``, NDCG@10 of
ref minus it with a 95% paired bootstrap over users: per seed (same seed, same users) and on per-user
values averaged over the seeds.

``--planted ITEMS:SEED`` (runs on ``fedinterest data synth --items ITEMS --seed SEED``) prints it for all users, then
for the users whose test item is the planted chain's successor of their validation item (the short-term signal)
and for the others (mostly the first item of a new session, where only the long-term favourites help).

``--long-tail K`` prints all of it twice: for all users, then only for the users whose test item has at most K
interactions in the training split (every user's history but the last two items), the split the runs used
(``shared_models.datasets.load.load_split`` of their ``config.data``), users in the order of ``test_ranks``.

    python benchmarks/compare_central.py --ref long-short \
        --runs long-short=runs/quality/ls-s10-seed{0,1,2}.json long=runs/quality/long-s10-seed{0,1,2}.json
    python benchmarks/compare_central.py --ref text --long-tail 5 \
        --runs text=runs/itemtext/text-seed{0,1,2}.json --runs notext=runs/itemtext/notext-seed{0,1,2}.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerbench.compare import HEADLINE, format_table, per_user_means, summary_rows  # noqa: E402
from shared_models.config import DataConfig  # noqa: E402
from shared_models.datasets import UserSplit  # noqa: E402
from shared_models.datasets.load import load_split  # noqa: E402
from shared_models.datasets.synth import planted_structure  # noqa: E402
from shared_models.train.evaluation import PROTOCOLS  # noqa: E402
from shared_models.train.metrics import paired_bootstrap  # noqa: E402


def as_run(result: dict) -> dict:
    """A train-central result in peerbench's run layout: seed, wall_s and the ranks of both protocols (a
    bench_peers run file already is one)."""
    if "ranks" in result:
        return result
    chosen = result["protocol"]
    other = next(p for p in PROTOCOLS if p != chosen)
    return {"seed": result["config"]["train"]["seed"], "wall_s": result["wall_s"], "epochs": result["epochs"],
            "data": result["config"].get("data", {}),
            "ranks": {chosen: result["test_ranks"], other: result[f"test_ranks_{other}"]}}


def parse_runs(items: list[list[str]]) -> dict[str, list[dict]]:
    """``[["a=f0", "a=f1"], ["b=g0", "g1"]]`` -> {label: runs}: each group's first item names its label; the
    others may repeat it (as shell brace expansion does: ``a=f{0,1}``) or give the file alone."""
    runs: dict[str, list[dict]] = {}
    for group in items:
        label, _, first = group[0].partition("=")
        if not first:
            raise SystemExit(f"--runs {group[0]!r}: expected LABEL=FILE [FILE ...]")
        files = [first]
        for item in group[1:]:
            other, sep, path = item.partition("=")
            if sep and other != label:
                raise SystemExit(f"--runs {item!r}: one --runs takes one label ({label!r})")
            files.append(path if sep else item)
        runs[label] = [{**as_run(json.loads(Path(f).read_text())), "file": f} for f in files]
    return runs


def long_tail_users(split: UserSplit, k: int) -> np.ndarray:
    """Indices of the users whose test item has at most ``k`` interactions in the training split (all users'
    training histories; an item never seen in training counts 0)."""
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in split.train]),
                         minlength=split.num_items)
    return np.flatnonzero(counts[split.test] <= k)


def chain_successor_users(split: UserSplit, *, num_items: int, seed: int) -> np.ndarray:
    """Indices of the users whose test item is the planted chain's successor of their validation item, on a
    dataset of ``fedinterest data synth --items num_items --seed seed`` (its items are named by their ids)."""
    synthetic = np.array([-1] + [int(t) for t in split.item_ids[1:]], dtype=np.int64)  # dense index -> item id
    valid, test = synthetic[np.asarray(split.valid)], synthetic[np.asarray(split.test)]
    if valid.min() < 1 or max(valid.max(), test.max()) > num_items:
        raise SystemExit(f"--planted {num_items}:{seed}: the split's items are not 1..{num_items}")
    try:
        layout = planted_structure(num_items=num_items, seed=seed)
    except ValueError as exc:
        raise SystemExit(f"--planted {num_items}:{seed}: {exc}") from None
    return np.flatnonzero(layout.successor[valid] == test)


def split_of(runs: dict[str, list[dict]]) -> UserSplit:
    """The one leave-one-out split every run was evaluated on (a bench_peers run, which records no data
    config, used the defaults); an error names the file whose data config differs from the first."""
    configs = [(r["file"], DataConfig(**r.get("data", {}))) for rs in runs.values() for r in rs]
    first_file, first = configs[0]
    for f, cfg in configs[1:]:
        if cfg != first:
            raise SystemExit(f"{f}: data config {cfg} differs from {first_file}'s {first}; one split per comparison")
    return load_split(first)


def restrict(runs: dict[str, list[dict]], users: np.ndarray, num_users: int) -> dict[str, list[dict]]:
    """Every run's ranks of ``users`` only; a run with other than ``num_users`` test ranks is an error naming
    its file (its users cannot be matched with the split's)."""
    out: dict[str, list[dict]] = {}
    for label, rs in runs.items():
        out[label] = []
        for r in rs:
            for p, ranks in r["ranks"].items():
                if len(ranks) != num_users:
                    raise SystemExit(f"{r['file']}: {len(ranks)} {p} test ranks, the split has {num_users} users")
            out[label].append({**r, "ranks": {p: np.asarray(ranks)[users].tolist() for p, ranks in r["ranks"].items()}})
    return out


def paired_lines(runs: dict[str, list[dict]], ref: str, *, num_samples: int) -> list[str]:
    """NDCG@10 of ``ref`` minus every other label, per seed and seed-averaged, both protocols."""
    lines = []
    for label, others in runs.items():
        if label == ref:
            continue
        for p in PROTOCOLS:
            parts = []
            mine = {r["seed"]: r for r in runs[ref]}
            for r in others:
                if r["seed"] in mine:
                    a = per_user_means([mine[r["seed"]]], p)[HEADLINE]
                    b = per_user_means([r], p)[HEADLINE]
                    d, lo, hi = paired_bootstrap(a, b, num_samples=num_samples, seed=r["seed"])
                    parts.append(f"seed {r['seed']} {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            d, lo, hi = paired_bootstrap(per_user_means(runs[ref], p)[HEADLINE], per_user_means(others, p)[HEADLINE],
                                         num_samples=num_samples, seed=0)
            parts.append(f"seed-averaged {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            lines.append(f"- {p} NDCG@10, {ref} minus {label}: " + "; ".join(parts))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", action="append", required=True, metavar="LABEL=FILE [FILE ...]")
    ap.add_argument("--ref", required=True, help="the label the others are compared with")
    ap.add_argument("--bootstrap-samples", type=int, default=2000)
    ap.add_argument("--long-tail", type=int, default=None, metavar="K",
                    help="also compare on the users whose test item has <= K training interactions")
    ap.add_argument("--planted", default=None, metavar="ITEMS:SEED",
                    help="runs on `fedinterest data synth --items ITEMS --seed SEED`: also compare on the users whose "
                         "test item follows the planted chain from their validation item, and on the others")
    args = ap.parse_args()
    runs = parse_runs(args.runs)
    if args.ref not in runs:
        raise SystemExit(f"--ref {args.ref!r} is not one of the labels {sorted(runs)}")
    np.seterr(all="ignore")
    if args.long_tail is None and args.planted is None:
        report(runs, args.ref, num_samples=args.bootstrap_samples)
    else:
        split = split_of(runs)
        slices = [(f"All users ({split.num_users})", np.arange(split.num_users))]
        if args.long_tail is not None:
            users = long_tail_users(split, args.long_tail)
            slices.append((f"Long tail: test item with <= {args.long_tail} training interactions ({len(users)} of "
                           f"{split.num_users} users)", users))
        if args.planted is not None:
            num_items, _, seed = args.planted.partition(":")
            chained = chain_successor_users(split, num_items=int(num_items), seed=int(seed or 0))
            rest = np.setdiff1d(np.arange(split.num_users), chained)
            slices += [(f"Test item = chain successor of the validation item: short-term signal ({len(chained)} "
                        "users)", chained),
                       (f"Any other test item, mostly a new session: long-term signal ({len(rest)} users)", rest)]
        for i, (title, users) in enumerate(slices):
            print(f"{'' if i == 0 else chr(10)}## {title}\n")
            report(restrict(runs, users, split.num_users), args.ref, num_samples=args.bootstrap_samples)
    for label, rs in runs.items():
        print(f"- {label}: epochs {[r.get('epochs') for r in rs]}, wall s {[round(r['wall_s']) for r in rs]}")


def report(runs: dict[str, list[dict]], ref: str, *, num_samples: int) -> None:
    """The table and the paired intervals of one set of users."""
    print(format_table(summary_rows(runs)))
    print("\n".join(paired_lines(runs, ref, num_samples=num_samples)))


if __name__ == "__main__":
    main()
