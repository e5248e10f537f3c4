"""Timing and byte bookkeeping of the Flower rows of bench_secagg.py.

Client side: ``timing_mod`` puts each device's time per message into a ConfigRecord (BENCH_RECORD) of its
reply.  Server side: ``MeteredGrid`` wraps the simulation's Grid and records, per protocol stage, the
protobuf bytes per node, the time spent waiting in send_and_receive, the server time before the stage and
the device times (removing BENCH_RECORD before metering); ``summarize`` turns the stages of one round into
round / server / projected time and bytes per device; ``TimedFit`` does that around one legacy fit round.
Imports Flower: load it only in the simulation child, after its environment variables are set.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid

BENCH_RECORD = "bench-timing"  # ConfigRecord the client-side timing mod adds to replies (removed before metering)
DEVICE_TIMES = ("device", "encrypt", "decrypt")  # "<name>_s" entries of BENCH_RECORD


def timing_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Outermost mod: device time for this message (incl. secaggplus_mod's work)."""
    t0 = time.perf_counter()
    out = call_next(msg, ctxt)
    dt = time.perf_counter() - t0
    if out.has_content():
        rec = out.content[BENCH_RECORD] if BENCH_RECORD in out.content else ConfigRecord({})
        rec["device_s"] = dt
        out.content[BENCH_RECORD] = rec
    return out


def msg_bytes(msg: Message) -> int:
    """Size of the message as sent: its protobuf encoding."""
    return message_to_proto(msg).ByteSize()


def _mean(values: Iterable[float]) -> float:
    """Mean as a float, 0.0 for no values."""
    values = list(values)
    return float(np.mean(values)) if values else 0.0


def _pop_device_times(replies: list[Message]) -> tuple[dict[int, int], dict[str, list[float]]]:
    """Strip BENCH_RECORD from the replies; return the bytes per sending node and the device times."""
    up: dict[int, int] = {}
    dev: dict[str, list[float]] = {}
    for r in replies:
        if r.has_content() and BENCH_RECORD in r.content:
            for k, v in r.content[BENCH_RECORD].items():
                dev.setdefault(k, []).append(float(v))
            del r.content[BENCH_RECORD]
        up[r.metadata.src_node_id] = msg_bytes(r)
    return up, dev


class MeteredGrid:
    """Delegates to the simulation's Grid; records per-stage bytes per node, wait time, device times."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.stages: list[dict[str, Any]] = []
        self.mark = time.perf_counter()  # end of the last call (or round start): server time is in between

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Send, wait, then meter the stage (metering time is kept apart from the round time)."""
        t0 = time.perf_counter()
        messages = list(messages)
        down = {m.metadata.dst_node_id: msg_bytes(m) for m in messages}
        t1 = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        t2 = time.perf_counter()
        up, dev = _pop_device_times(replies)
        t3 = time.perf_counter()
        stage = dict(messages=len(messages), replies=len(replies), errors=sum(r.has_error() for r in replies),
                     down=down, up=up, wait_s=t2 - t1, meter_s=(t1 - t0) + (t3 - t2),
                     server_before_s=t0 - self.mark)
        self.mark = t3
        for k in DEVICE_TIMES:
            stage[f"{k}_max_s"] = max(dev.get(f"{k}_s", []), default=0.0)
            stage[f"{k}_mean_s"] = _mean(dev.get(f"{k}_s", []))
        self.stages.append(stage)
        return replies


def _stage_record(s: dict[str, Any]) -> dict[str, Any]:
    """A stage as kept in the JSON: per-node byte maps replaced by their means, metering time dropped."""
    return {**{k: v for k, v in s.items() if k not in ("up", "down", "meter_s")},
            "up_bytes_mean": _mean(s["up"].values()), "down_bytes_mean": _mean(s["down"].values())}


def summarize(stages: list[dict[str, Any]], wall: float, server_after: float) -> dict[str, Any]:
    """One round from its stages: round time (metering excluded), server time, projected time, bytes/device."""
    meter = sum(s["meter_s"] for s in stages)
    wait = sum(s["wait_s"] for s in stages)
    nodes = set().union(*(s["down"].keys() for s in stages)) if stages else set()
    down = [sum(s["down"].get(k, 0) for s in stages) for k in nodes]
    up = [sum(s["up"].get(k, 0) for s in stages) for k in nodes]
    server = wall - meter - wait
    out = dict(round_s=wall - meter, wait_s=wait, server_s=server, server_after_last_stage_s=server_after,
               proj_s=sum(s["device_max_s"] for s in stages) + server,
               errors=sum(s["errors"] for s in stages),
               up_bytes=_mean(up), down_bytes=_mean(down),
               stages=[_stage_record(s) for s in stages])
    for k in DEVICE_TIMES:
        out[f"{k}_max_s"] = sum(s[f"{k}_max_s"] for s in stages)
        out[f"{k}_mean_s"] = sum(s[f"{k}_mean_s"] for s in stages)
    return out


class RoundTimer:
    """Times rounds on a MeteredGrid: ``start`` before the round, ``stop`` after it appends its summary."""

    def __init__(self, grid: MeteredGrid) -> None:
        self.grid = grid
        self.rounds: list[dict[str, Any]] = []
        self._first = 0
        self._t0 = 0.0

    def start(self) -> None:
        """Mark the round start (also the start of the server time before the first stage)."""
        self._first = len(self.grid.stages)
        self._t0 = self.grid.mark = time.perf_counter()

    def stop(self) -> None:
        """Summarize the stages sent since ``start``."""
        t1 = time.perf_counter()
        self.rounds.append(summarize(self.grid.stages[self._first:], t1 - self._t0, t1 - self.grid.mark))


class TimedFit(RoundTimer):
    """Wraps a legacy fit workflow: every call is one timed round."""

    def __init__(self, inner: Callable[[Any, Any], None], grid: MeteredGrid) -> None:
        super().__init__(grid)
        self.inner = inner

    def __call__(self, grid: Any, context: Any) -> None:
        self.start()
        self.inner(grid, context)
        self.stop()

