"""A real device's state directory: layout, item catalogue, and the init / add / import operations.

Layout of ``STATE_DIR`` (everything stays on the device)::

    device.json           {"user_id": ...}: who this device is (also its key id in a deployment)
    config.json           the typed Config (model architecture; replaced by the federation's config when
                          the device takes part in a run)
    catalogue.json        item tokens <-> dense indices (0 = padding), titles, popularity counts
    interactions.sqlite   the interaction log (client.interactions)
    personal.pt           personal parameters (client.store.DeviceStore); empty until the first round
    ledger.json           privacy ledger, created at the first DP round
    keys/                 this device's key material (manifest.json, clients/<id>/...), optional
    global_shared.npz     latest plaintext global shared weights, or
    global_sum.ckks       latest encrypted global sum (decrypted on the device with keys/)
    global_prior.npz|.ckks  the run's released DP popularity prior (privacy.prior), plaintext or encrypted
"""

from __future__ import annotations

import functools
import io
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from client.interactions import STORE_NAME, InteractionError, InteractionStore
from client.store import DeviceStore
from shared_models.config import Config, build_config, load_config
from shared_models.atomic_io import atomic_write_bytes, atomic_write_json
from shared_models.paths import check_device_id

if TYPE_CHECKING:
    from client.round import DeviceContext

DEVICE_FILE, CONFIG_FILE, CATALOGUE_FILE = "device.json", "config.json", "catalogue.json"
KEYS_DIR, GLOBAL_NPZ, GLOBAL_CKKS = "keys", "global_shared.npz", "global_sum.ckks"
PRIOR_NPZ, PRIOR_CKKS = "global_prior.npz", "global_prior.ckks"  # the run's released popularity prior
CATALOGUE_VERSION = 1


class DeviceStateError(ValueError):
    """A missing or inconsistent device state directory; the message names the file."""


@dataclass(frozen=True)
class Catalogue:
    """Item tokens by dense index (``item_ids[0]`` is the padding token), optional titles and popularity."""

    item_ids: list[str]
    titles: list[str] | None = None
    popularity: list[float] | None = None  # interaction counts per index (public dataset statistics)
    source: str = ""
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {tok: i for i, tok in enumerate(self.item_ids) if i > 0})

    @property
    def num_items(self) -> int:
        """Catalogue size including the padding index 0 (the model's ``num_items``)."""
        return len(self.item_ids)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def to_indices(self, tokens: list[str], *, where: str = "history") -> np.ndarray:
        missing = [t for t in tokens if t not in self.index]
        if missing:
            raise DeviceStateError(f"{where}: item {missing[0]!r} is not in the catalogue ({len(missing)} unknown)")
        return np.fromiter((self.index[t] for t in tokens), dtype=np.int64, count=len(tokens))

    def title(self, idx: int) -> str:
        return self.titles[idx] if self.titles else self.item_ids[idx]

    def save(self, path: Path) -> None:
        atomic_write_json(path, {"version": CATALOGUE_VERSION, "source": self.source, "item_ids": self.item_ids,
                                 "titles": self.titles, "popularity": self.popularity})

    @staticmethod
    def load(path: Path) -> "Catalogue":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != CATALOGUE_VERSION:
                raise DeviceStateError(f"{path}: field 'version': unsupported {raw.get('version')!r}")
            return Catalogue(list(raw["item_ids"]), raw.get("titles"), raw.get("popularity"), raw.get("source", ""))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DeviceStateError(f"{path}: cannot read the catalogue ({exc})") from None


def catalogue_from_dataset(spec: str) -> tuple[Catalogue, "object"]:
    """(catalogue, Interactions) of a dataset spec (``ml-100k``, ``.inter`` or ``.csv``)."""
    from shared_models.datasets import load_interactions

    inter = load_interactions(spec)
    counts = np.bincount(inter.items, minlength=inter.num_items).astype(float)
    counts[0] = 0.0
    titles = list(inter.item_text) if inter.item_text is not None else None
    return Catalogue(list(inter.item_ids), titles, counts.tolist(), str(spec)), inter


def catalogue_from_csv(path: Path) -> Catalogue:
    """A catalogue CSV with header ``item`` or ``item,title`` (one row per item, in index order)."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    cols = [c.strip().lower() for c in rows[0]] if rows else []
    if "item" not in cols:
        raise DeviceStateError(f"{path}:1: catalogue header must be 'item' or 'item,title'")
    items = [r[cols.index("item")].strip() for r in rows[1:] if r]
    dup = [t for t, n in Counter(items).items() if n > 1]
    if dup or not all(items):
        raise DeviceStateError(f"{path}: field 'item': duplicate or empty tokens ({dup[:3]})")
    titles = [r[cols.index("title")] for r in rows[1:] if r] if "title" in cols else None
    return Catalogue(["[PAD]", *items], ["", *titles] if titles else None, None, str(path))


class DeviceState:
    """An initialised state directory (``DeviceState(root)`` fails clearly on anything else)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        device = self.root / DEVICE_FILE
        if not device.is_file():
            raise DeviceStateError(f"{self.root}: not a device state directory (no {DEVICE_FILE}; "
                                   "run `fedinterest device init --state DIR --user-id U` first)")
        try:
            self.user_id = str(json.loads(device.read_text())["user_id"])
        except (json.JSONDecodeError, KeyError) as exc:
            raise DeviceStateError(f"{device}: field 'user_id' missing or unreadable ({exc})") from None

    def config(self) -> Config:
        path = self.root / CONFIG_FILE
        try:
            return build_config(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DeviceStateError(f"{path}: cannot read the config ({exc})") from None

    def save_config(self, cfg: Config) -> None:
        atomic_write_json(self.root / CONFIG_FILE, cfg.to_dict())

    def catalogue(self) -> Catalogue:
        return _cached_catalogue(str(self.root / CATALOGUE_FILE), (self.root / CATALOGUE_FILE).stat().st_mtime_ns)

    def interactions(self) -> InteractionStore:
        return InteractionStore(self.root / STORE_NAME)

    def store(self) -> DeviceStore:
        return DeviceStore(self.root)

    @property
    def keys_dir(self) -> Path:
        return self.root / KEYS_DIR

    def history_indices(self) -> np.ndarray:
        """The stored history as dense item indices, oldest first."""
        with self.interactions() as db:
            return self.catalogue().to_indices(db.history(), where=str(self.root / STORE_NAME))


@functools.lru_cache(maxsize=8)
def _cached_catalogue(path: str, mtime_ns: int) -> Catalogue:
    return Catalogue.load(Path(path))


def init_device(root: Path | str, *, user_id: str, dataset: str | None = None, catalogue_csv: Path | None = None,
                config: Path | None = None, import_history: bool = True, keys: Path | None = None) -> int:
    """Create a state directory; returns the number of history events imported from ``dataset``."""
    root = Path(root)
    _check_user_id(user_id)
    if (root / DEVICE_FILE).exists():
        raise DeviceStateError(f"{root / DEVICE_FILE}: already initialised (use another --state)")
    if (dataset is None) == (catalogue_csv is None):
        raise DeviceStateError("give exactly one of --dataset or --catalogue")
    cfg = load_config(config)
    inter = None
    if dataset is not None:
        cat, inter = catalogue_from_dataset(dataset)
        cfg.data.dataset = dataset
    else:
        cat = catalogue_from_csv(Path(catalogue_csv))
    root.mkdir(parents=True, exist_ok=True)
    for leftover in (STORE_NAME, f"{STORE_NAME}-wal", f"{STORE_NAME}-shm"):  # from an init that died midway
        (root / leftover).unlink(missing_ok=True)
    cat.save(root / CATALOGUE_FILE)
    atomic_write_json(root / CONFIG_FILE, cfg.to_dict())
    DeviceStore(root).save_personal({})
    if keys is not None:
        install_device_keys(root, keys, user_id)
    with InteractionStore(root / STORE_NAME, create=True) as db:
        count = db.add_many(_user_rows(inter, user_id)) if inter is not None and import_history else 0
    atomic_write_json(root / DEVICE_FILE, {"user_id": user_id})  # last: its presence marks a complete init
    return count


def _user_rows(inter, user_id: str) -> list[tuple[str, float]]:
    if user_id not in inter.user_ids:
        return []
    u = inter.user_ids.index(user_id)
    rows = np.flatnonzero(inter.users == u)
    return [(inter.item_ids[int(inter.items[r])], float(inter.timestamps[r])) for r in rows]


def add_interaction(root: Path | str, item: str, ts: float | None = None) -> int:
    """Record one interaction with a catalogue item; returns the store's new size."""
    state = DeviceState(root)
    if item not in state.catalogue():
        raise InteractionError(f"{state.root / CATALOGUE_FILE}: item {item!r} is not in the device catalogue")
    with state.interactions() as db:
        db.add(item, ts)
        return len(db)


def import_interactions(root: Path | str, csv_path: Path | str) -> int:
    """Import a CSV (all-or-nothing); ``user`` columns are filtered to this device's user id."""
    state = DeviceState(root)
    cat = state.catalogue()
    with state.interactions() as db:
        return db.import_csv(csv_path, user_id=state.user_id, known=cat.__contains__)


def device_text(cfg: Config, cat: Catalogue):
    """Frozen title embeddings when the model uses them (computed on the device from the catalogue)."""
    from shared_models.model.factory import item_text_tensor, uses_text

    if not uses_text(cfg.model):
        return None

    return item_text_tensor(cfg.model, cat.titles)


def deployed_device(root: Path | str, cfg: Config, received: object, prior: object = None) -> "DeviceContext":
    """Open a state dir for a federated message: adopt the run's config, keep the received global model
    (encrypted sum or plaintext weights) and popularity prior for ``recommend``, and split the stored history leave-one-out
    (last item = test, second-last = validation, the rest = training), as in simulation."""
    from client.round import DeviceContext  # torch + opacus: only when a device takes part in a run
    from shared_models.datasets.population import DeviceData

    state = DeviceState(root)
    cat = state.catalogue()
    history = state.history_indices()
    if len(history) < 3:
        raise DeviceStateError(f"{state.root / STORE_NAME}: {len(history)} interactions; a device needs >= 3 to "
                               "take part (training items + one validation + one test item)")
    state.save_config(cfg)
    _keep(state.root, received, encrypted_name=GLOBAL_CKKS, plain_name=GLOBAL_NPZ)
    _keep(state.root, prior, encrypted_name=PRIOR_CKKS, plain_name=PRIOR_NPZ)
    data = DeviceData(device_id=state.user_id, train=history[:-2], valid=int(history[-2]), test=int(history[-1]),
                      num_items=cat.num_items)
    return DeviceContext(data, state.store(), device_text(cfg, cat), len(data.train), str(state.keys_dir))


def _keep(root: Path, state: object, *, encrypted_name: str, plain_name: str) -> None:
    """Atomically store the latest state the device received (encrypted bytes or plaintext arrays); nothing
    when there is none yet (round 1 under HE)."""
    if not state:
        return
    if isinstance(state, (bytes, bytearray)):
        name, other, blob = encrypted_name, plain_name, bytes(state)
    else:
        buf = io.BytesIO()
        np.savez(buf, **state)
        name, other, blob = plain_name, encrypted_name, buf.getvalue()
    atomic_write_bytes(root / name, blob)
    (root / other).unlink(missing_ok=True)


def _check_user_id(user_id: str) -> str:
    """A deployed device's user id is its key id, a file name in the key tree: only safe ids are accepted."""
    try:
        return check_device_id(user_id, what="--user-id")
    except ValueError as exc:
        raise DeviceStateError(str(exc)) from None


def install_device_keys(root: Path | str, keys_root: Path | str, device_id: str) -> Path:
    """Copy ONE device's key material (and the public manifest) from a ``keys init`` tree into ``root/keys``."""
    src, dst = Path(keys_root), Path(root) / KEYS_DIR
    _check_user_id(device_id)
    if not (src / "clients" / device_id).is_dir():
        raise DeviceStateError(f"{src}: no key material for device {device_id!r} (clients/{device_id}/ missing)")
    (dst / "clients").mkdir(parents=True, exist_ok=True)
    dst.chmod(0o700)
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    shutil.copy2(src / "clients" / "server_signing_ed25519.pub.pem", dst / "clients")
    shutil.copytree(src / "clients" / device_id, dst / "clients" / device_id, dirs_exist_ok=True)
    return dst
