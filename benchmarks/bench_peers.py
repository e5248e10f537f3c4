"""Our long-short against peers on ML-100K, every model ranked by the project's evaluator, both protocols.

Models: popularity, EASE (closed form; its L2 picked on validation NDCG@10 from --ease-l2), RecBole 1.2.1's
GRU4Rec and SASRec (benchmarks/peerbench/recbole_models.py: RecBole's models, defaults and every-prefix recipe on
the project's split), and our long-short (simulations.central.train_central). All use
shared_models.datasets.load.load_split (chronological leave-one-out: last item test, second-last validation),
train on the training sequences, and are ranked for each user's test prefix (train + validation item) over
the full catalogue by shared_models.train.evaluation.rank_targets_both: masked (history removed) and
unmasked (RecBole's protocol). Prints one table (mean ± std over seeds) and paired bootstrap 95% intervals
of ours minus the best peer (per-user metrics averaged over seeds, users resampled jointly); writes every
run (with its per-user ranks) to --out-dir and the summary to --out-dir/summary.json. Finished runs are
reused, so an interrupted benchmark resumes. On a small CPU, bound the RecBole models with --samples-per-epoch
and --max-train-s and ours with --ours-epochs; the table's notes then say how many steps each peer took.

RecBole lives in its own virtualenv (its metadata pins ray<=2.6.3, which flwr[simulation] cannot share):

    python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install torch==2.13.0
    /tmp/peers-venv/bin/pip install -e ".[peers]" && /tmp/peers-venv/bin/pip install --no-deps recbole==1.2.1
    PYTHONPATH=$PWD /tmp/peers-venv/bin/python benchmarks/bench_peers.py --seeds 0 1 2 --out-dir runs/bench-peers
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peerbench.compare import format_comparison, format_table, ours_vs_best_peer, summary_rows  # noqa: E402
from peerbench.ease import EASE  # noqa: E402
from shared_models.config import DataConfig, build_config  # noqa: E402
from shared_models.datasets.load import load_split  # noqa: E402
from shared_models.model.popularity import PopularityModel  # noqa: E402
from shared_models.train.evaluation import evaluate_split_both  # noqa: E402

OURS, DETERMINISTIC = "long-short", ("pop", "ease")
MODELS = ("pop", "ease", "GRU4Rec", "SASRec", OURS)
log = logging.getLogger("bench_peers")


def _ranked(model, split, max_len: int, batch_size: int) -> dict:
    metrics, ranks = evaluate_split_both(model, split, stage="test", max_len=max_len, batch_size=batch_size)
    return {"metrics": metrics, "ranks": {"masked": ranks.masked.tolist(), "unmasked": ranks.unmasked.tolist()}}


def run_ease(split, args) -> dict:
    longest = max(len(t) for t in split.train) + 1  # the test prefix: train + validation item, nothing cut
    chosen, best = None, -1.0
    for l2 in args.ease_l2:
        valid, _ = evaluate_split_both(EASE(split.train, split.num_items, l2=l2), split, stage="valid",
                                       max_len=longest, batch_size=args.eval_batch_size)
        log.info("EASE l2 %g: valid %s ndcg@10 %.4f", l2, args.select, valid[args.select]["ndcg@10"])
        if valid[args.select]["ndcg@10"] > best:
            chosen, best = l2, valid[args.select]["ndcg@10"]
    return {"l2": chosen, **_ranked(EASE(split.train, split.num_items, l2=chosen), split, longest,
                                    args.eval_batch_size)}


def run_ours(seed: int, args) -> dict:
    from simulations.central import train_central

    overrides = [f"data.dataset={json.dumps(args.dataset)}", f"model.kind={json.dumps(OURS)}",
                 f"train.seed={seed}", f"train.epochs={args.ours_epochs}", f"train.patience={args.ours_patience}",
                 f"eval.mask-history={'true' if args.select == 'masked' else 'false'}",
                 f"train.threads={args.threads}", *args.ours_set]
    res = train_central(build_config({}, overrides), progress=False)
    other = "unmasked" if res["protocol"] == "masked" else "masked"
    return {"ranks": {res["protocol"]: res["test_ranks"], other: res[f"test_ranks_{other}"]},
            "metrics": {res["protocol"]: res["metrics"], other: res[f"metrics_{other}"]},
            "epochs": res["epochs"], "best_epoch": res["best_epoch"]}


def run_one(name: str, seed: int, split, args) -> dict:
    path = args.out_dir / f"{name}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if name == "pop":
        out = _ranked(PopularityModel(split.train, split.num_items), split, 1, args.eval_batch_size)
    elif name == "ease":
        out = run_ease(split, args)
    elif name == OURS:
        out = run_ours(seed, args)
    else:
        from peerbench.recbole_models import train_peer

        scorer, info = train_peer(name, split, seed=seed, epochs=args.epochs, patience=args.patience,
                                  select=args.select, eval_batch_size=args.eval_batch_size,
                                  samples_per_epoch=args.samples_per_epoch, max_train_s=args.max_train_s)
        out = {**info, **_ranked(scorer, split, scorer.max_len, args.eval_batch_size)}
    out = {"model": name, "seed": seed, **out, "wall_s": round(time.perf_counter() - t0, 2)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    log.info("%s seed %d: masked ndcg@10 %.4f, unmasked ndcg@10 %.4f, %.0f s", name, seed,
             out["metrics"]["masked"]["ndcg@10"], out["metrics"]["unmasked"]["ndcg@10"], out["wall_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=300, help="most epochs of a RecBole model (RecBole default 300)")
    ap.add_argument("--patience", type=int, default=None, help="RecBole models (default: RecBole stopping_step)")
    ap.add_argument("--samples-per-epoch", type=int, default=0,
                    help="RecBole models: prefixes drawn per epoch (0 = all, RecBole's epoch)")
    ap.add_argument("--max-train-s", type=float, default=0.0,
                    help="RecBole models: stop after the epoch that ends past this many seconds (0 = no limit)")
    ap.add_argument("--ours-epochs", type=int, default=200)
    ap.add_argument("--ours-patience", type=int, default=10)
    ap.add_argument("--ours-set", nargs="*", default=[], help="extra dotted overrides for our model")
    ap.add_argument("--ease-l2", nargs="+", type=float, default=[10.0, 30.0, 100.0, 300.0, 1000.0])
    ap.add_argument("--select", choices=("masked", "unmasked"), default="masked",
                    help="validation protocol for early stopping and EASE's l2")
    ap.add_argument("--eval-batch-size", type=int, default=512)
    ap.add_argument("--bootstrap-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/bench-peers"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split(DataConfig(dataset=args.dataset))
    runs = {m: [run_one(m, s, split, args) for s in ([0] if m in DETERMINISTIC else args.seeds)]
            for m in args.models}
    rows = summary_rows(runs)
    peers = [m for m in args.models if m != OURS]
    cmp = ours_vs_best_peer(runs, ours=OURS, peers=peers, num_samples=args.bootstrap_samples)
    print(f"{args.dataset}, test split, full ranking over {split.num_items - 1} items, {len(split.train)} users; "
          f"ties count against the target")
    print(format_table(rows))
    print(format_comparison(cmp, OURS))
    for m, rs in runs.items():
        for r in rs:
            if "steps" in r:
                print(f"- {m} seed {r['seed']}: {r['epochs']} epochs of {r['samples_per_epoch']} prefixes "
                      f"({r['steps']} steps), best epoch {r['best_epoch']}, stopped by {r['stopped_by']}")
    summary = {"dataset": args.dataset, "users": len(split.train), "command": " ".join(sys.argv),
               "rows": rows, "ours_vs_best_peer": cmp,
               "runs": {m: [{k: v for k, v in r.items() if k != "ranks"} for r in rs] for m, rs in runs.items()}}
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
