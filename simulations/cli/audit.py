"""``fedinterest audit RUN_DIR [--verify-log] [--empirical]``: register with
``app.add_typer(audit_app, name="audit")`` in :mod:`simulations.cli.main`.

Exit status: 0 PASS, 1 FAIL, 2 the run directory cannot be audited (a file is missing or unreadable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

EXIT_FAIL = 1
EXIT_UNUSABLE = 2

audit_app = typer.Typer(add_completion=False, context_settings={"allow_interspersed_args": True},
                        help="Audit a run's privacy claim: writes RUN_DIR/audit.json and audit.md.")
console = Console(stderr=True, soft_wrap=True)


@audit_app.callback(invoke_without_command=True)
def audit(
    run_dir: Path = typer.Argument(..., help="a `fedinterest simulate` output directory"),
    verify_log: bool = typer.Option(False, "--verify-log", help="require RUN_DIR/round_log.jsonl and verify it"),
    empirical: bool = typer.Option(False, "--empirical",
                                   help="also run the one-run canary audit (example level: re-trains one device, "
                                        "~10 s on CPU; user level: 1000 canary clients in one round, ~2 s)"),
    verify_key: Optional[Path] = typer.Option(None, help="server Ed25519 public key (PEM); default "
                                              "KEYS_DIR/server/signing_ed25519.pub.pem"),
    keys_dir: Optional[Path] = typer.Option(None, help="the run's keys directory (default RUN_DIR.keys beside "
                                            "the run; a run made with he.keys_dir: that folder)"),
    confidence: float = typer.Option(0.95, help="confidence of the empirical lower bound"),
    key_fingerprint: Optional[str] = typer.Option(None, help="SHA-256 (hex) of the server's raw public key, as "
                                                  "printed by `fedinterest simulate`: pins the log's key from "
                                                  "outside the run directory"),
) -> None:
    """Cross-check every ledger (the devices', or the server's user-level one) with dp_accounting, check
    budgets and the signed round log."""
    from simulations.audit.run import AUDIT_JSON, AUDIT_MD, audit_run
    from simulations.audit.ledgers import RunDirError

    if not run_dir.is_dir():
        console.print(f"[red]error:[/red] {run_dir}: not a directory")
        raise typer.Exit(code=EXIT_UNUSABLE)
    try:
        result = audit_run(run_dir, verify_log=verify_log, empirical=empirical, verify_key=verify_key,
                           confidence=confidence, key_fingerprint=key_fingerprint, keys_dir=keys_dir)
    except RunDirError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=EXIT_UNUSABLE) from None
    colour = "green" if result["verdict"] == "PASS" else "red"
    verdict = result["verdict"]
    console.print(f"[bold {colour}]{verdict}[/bold {colour}]  ->  {run_dir / AUDIT_JSON}, {run_dir / AUDIT_MD}")
    for reason in result["reasons"]:
        console.print(f"  - {reason}", markup=False, highlight=False)
    if result["verdict"] != "PASS":
        raise typer.Exit(code=EXIT_FAIL)
