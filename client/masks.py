"""Device half of pairwise masking (``he.masking``): the round's mask secrets, kept in the device's state folder.

One key set per attempt at a (run, round), made at ``mask-keys`` and kept in ``mask_round.json`` (0600) across the
round's messages, which may reach a different process each time (Flower simulation, Ray actor recycling, a
restarted SuperNode). Stages must come in order: keys -> shares -> receive -> upload -> unmask; anything out of
order, for another run or round, or a second reveal is refused with a ValueError naming why. After the reveal
the secrets are erased and only the record that this round was revealed stays. A new attempt at the same round
(a resumed run, whose server sends a fresh attempt nonce) replaces the earlier attempt's secrets and held shares,
so what was masked under them can no longer be unmasked.

What the device enforces whatever the server says (``docs/threat-model.md`` section 6):
- it masks with at least ``threshold`` peers, and seals shares at a threshold of at least 2;
- it reveals for each owner at most one share (self seed if the owner is in the sum, mask key if it dropped),
  once per round, and only when at least ``threshold`` updates are in the sum.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client.store import DeviceStore
from shared_models.atomic_io import atomic_write_bytes
from shared_models.config import Config
from shared_models.crypto import DeviceKeys
from shared_models.crypto import mask_wire as wire
from shared_models.crypto.context import context_params
from shared_models.crypto.mask_round import MaskDevice, PublicKeys
from shared_models.crypto.masking import seed_commitment
from shared_models.crypto.seed_sharing import SharePair, raw_private
from shared_models.crypto.signing import sign_mask_keys

STATE_FILE = "mask_round.json"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


class MaskState:
    """The persisted round secrets of one device."""

    def __init__(self, path: Path, doc: dict) -> None:
        self.path, self.doc = path, doc

    @classmethod
    def load(cls, store: DeviceStore, *, run_id: str, round_id: int, stage: str) -> "MaskState":
        """This round's state, which must have reached exactly ``stage`` (ValueError otherwise)."""
        path = store.root / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"no mask keys for round {round_id} on this device") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable mask state ({exc})") from None
        if doc.get("run") != run_id or doc.get("round") != round_id:
            raise ValueError(f"no mask keys for round {round_id} of this run on this device")
        if doc.get("stage") != stage:
            raise ValueError(f"mask stage out of order: this round is at {doc.get('stage')!r}, expected {stage!r}")
        return cls(path, doc)

    def save(self, stage: str) -> None:
        self.doc["stage"] = stage
        atomic_write_bytes(self.path, json.dumps(self.doc).encode(), mode=0o600)

    def device(self) -> MaskDevice:
        d = self.doc
        dev = MaskDevice(d["id"], X25519PrivateKey.from_private_bytes(_unb64(d["channel"])),
                         X25519PrivateKey.from_private_bytes(_unb64(d["mask"])), _unb64(d["self_seed"]))
        dev.held = {int(o): SharePair(_unb64(k), _unb64(s)) for o, (k, s) in d.get("held", {}).items()}
        return dev

    @property
    def context(self) -> bytes:
        return wire.round_context(self.doc["run"], self.doc["round"], _unb64(self.doc["attempt"]))

    def peers(self) -> dict[int, PublicKeys]:
        return {int(v): PublicKeys(_unb64(c), _unb64(m)) for v, (c, m) in self.doc["peers"].items()}


def answer(stage: str, request: bytes, *, store: DeviceStore, keys: DeviceKeys, run_id: str,
           round_id: int) -> bytes:
    """The device's reply to one masking request (ValueError / MaskWireError: refused, with the reason)."""
    if stage == wire.STAGE_KEYS:
        return _keys(wire.KeysRequest.decode(request), store, keys, run_id, round_id)
    if stage == wire.STAGE_SHARES:
        return _shares(wire.SharesRequest.decode(request), store, run_id, round_id)
    if stage == wire.STAGE_RECEIVE:
        return _receive(wire.TokensMessage.decode(request), store, run_id, round_id)
    if stage == wire.STAGE_UNMASK:
        return _unmask(wire.UnmaskRequest.decode(request), store, run_id, round_id)
    raise ValueError(f"unknown masking stage {stage!r}")


def _keys(req: wire.KeysRequest, store: DeviceStore, keys: DeviceKeys, run_id: str, round_id: int) -> bytes:
    path = store.root / STATE_FILE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("run") == run_id and old.get("round") == round_id and old.get("attempt") == _b64(req.attempt):
        raise ValueError(f"round {round_id} already has mask keys for this attempt (one key set per attempt)")
    context = wire.round_context(run_id, round_id, req.attempt)
    dev = MaskDevice.start(req.own_id)
    pub = dev.public
    doc = {"run": run_id, "round": round_id, "attempt": _b64(req.attempt), "id": req.own_id,
           "channel": _b64(raw_private(dev.channel_key)),
           "mask": _b64(raw_private(dev.mask_key)), "self_seed": _b64(dev.self_seed),
           "public": [_b64(pub.channel), _b64(pub.mask)]}
    MaskState(path, doc).save("keys")
    commit = seed_commitment(dev.self_seed)
    signature = sign_mask_keys(keys.signing_key, run_id=run_id, round_id=round_id, device_id=keys.device_id,
                               context=context, channel=pub.channel, mask=pub.mask, commit=commit)
    return wire.KeysReply(keys.device_id, pub, commit, signature).encode()


def _check_self(state: MaskState, listed: dict[int, PublicKeys], field: str) -> None:
    own = state.doc["id"]
    mine = PublicKeys(*(_unb64(x) for x in state.doc["public"]))
    if listed.get(own) != mine:
        raise ValueError(f"{field} must list this device (index {own}) with the keys it advertised")


def _shares(req: wire.SharesRequest, store: DeviceStore, run_id: str, round_id: int) -> bytes:
    state = MaskState.load(store, run_id=run_id, round_id=round_id, stage="keys")
    _check_self(state, req.neighbours, "neighbours")
    if not 2 <= req.threshold < len(req.neighbours):
        raise ValueError(f"threshold {req.threshold} for {len(req.neighbours)} neighbours: need 2 <= t < neighbours")
    tokens = state.device().share_tokens(req.neighbours, threshold=req.threshold, context=state.context)
    state.doc["threshold"] = req.threshold
    state.save("shares")
    return wire.TokensMessage(tokens, {}).encode()


def _receive(req: wire.TokensMessage, store: DeviceStore, run_id: str, round_id: int) -> bytes:
    state = MaskState.load(store, run_id=run_id, round_id=round_id, stage="shares")
    _check_self(state, req.senders, "senders")
    own, t = state.doc["id"], state.doc["threshold"]
    if len(req.senders) - 1 < t:
        raise ValueError(f"{len(req.senders) - 1} peers to mask with, fewer than the threshold {t}: the server with "
                         f"{len(req.senders) - 1} colluders could remove every mask")
    if set(req.tokens) - set(req.senders):
        raise ValueError("tokens from devices that are not listed as senders")
    dev = state.device()
    for sender, token in req.tokens.items():  # a share that does not open is not held; the pair still masks
        try:
            dev.receive_tokens({sender: token}, req.senders, context=state.context)
        except ValueError:
            continue
    state.doc["held"] = {str(o): [_b64(p.key_share), _b64(p.seed_share)] for o, p in dev.held.items()}
    state.doc["peers"] = {str(v): [_b64(k.channel), _b64(k.mask)] for v, k in req.senders.items() if v != own}
    state.save("received")
    return wire.ACK


def upload_mask(store: DeviceStore, keys: DeviceKeys, n_params: int, *, run_id: str, round_id: int) -> np.ndarray:
    """The c0 mask of this round's update (shape (n_ciphertexts, N)); the state moves to ``uploaded`` first,
    so a second upload in the same round is refused."""
    state = MaskState.load(store, run_id=run_id, round_id=round_id, stage="received")
    state.save("uploaded")
    params = context_params(keys.context)
    return state.device().upload_mask(state.peers(), context=state.context,
                                      n_ciphertexts=keys.he.n_ciphertexts(n_params), degree=params.degree,
                                      modulus=params.modulus)


def mask_maker(cfg: Config, store: DeviceStore, keys: DeviceKeys, *, run_id: str, round_id: int):
    """This round's c0 mask maker for ``client.secure.encode_update`` under ``he.masking``; None without it."""
    if not cfg.he.masking:
        return None
    return functools.partial(upload_mask, store, keys, run_id=run_id, round_id=round_id)


def _unmask(req: wire.UnmaskRequest, store: DeviceStore, run_id: str, round_id: int) -> bytes:
    try:
        state = MaskState.load(store, run_id=run_id, round_id=round_id, stage="uploaded")
    except ValueError:  # a device that completed the key exchange but sent no update still holds shares
        state = MaskState.load(store, run_id=run_id, round_id=round_id, stage="received")
    t = state.doc["threshold"]
    if len(req.in_sum) < t:
        raise ValueError(f"{len(req.in_sum)} updates in the sum, fewer than the threshold {t}: nothing revealed")
    shares = state.device().unmask_reply(in_sum=req.in_sum, dropped=req.dropped)
    state.doc = {k: state.doc[k] for k in ("run", "round", "attempt", "id")}  # secrets erased: nothing more to reveal
    state.save("revealed")
    return wire.SharesReply(shares).encode()
