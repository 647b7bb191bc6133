"""A network and device model for time accounting: what a round would take on real links.

Pure arithmetic over what a run measured (each sampled client's bytes down and up, its local
compute seconds, the server's aggregation seconds); nothing sleeps. The server prices every round
under the run's ``network.*`` (``modelled_round_s``, ``cum_modelled_s`` in each metrics record). A synchronous round waits for
its slowest client::

    round_s = max over sampled clients i of
                (latency + bytes_down_i·8 / downlink  +  compute_i · speed_i  +  latency + bytes_up_i·8 / uplink)
              + aggregate_s

``speed_i`` is a per-client factor (1 = as fast as the machine that measured the run; 3 = three
times slower): ``network.compute_scale`` times a seeded log-normal draw of spread
``network.speed_sigma`` (0: every client alike), so stragglers are reproducible.

Presets (``network.preset``; any of ``uplink_mbps``/``downlink_mbps``/``latency_ms`` set overrides it):

======================  ===========  =============  ===========  ====================================================
preset                  uplink Mbps  downlink Mbps  latency ms   source
======================  ===========  =============  ===========  ====================================================
``edge-4g``             5            20             60           Opensignal, US Mobile Network Experience (2019): 4G
                                                                 averages 14–21 Mbps down, 2.4–7 Mbps up, 58–70 ms
``wifi``                50           100            10           home broadband behind Wi-Fi; fibre/cable latency
                                                                 10–40 ms (same report); round numbers
``datacenter``          10000        10000          0.5          10 GbE NICs in one rack: line rate, sub-ms RTT
======================  ===========  =============  ===========  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from federa.settings import Section


@dataclass(frozen=True)
class Link:
    uplink_mbps: float
    downlink_mbps: float
    latency_ms: float


PRESETS: dict[str, Link] = {
    "edge-4g": Link(uplink_mbps=5.0, downlink_mbps=20.0, latency_ms=60.0),
    "wifi": Link(uplink_mbps=50.0, downlink_mbps=100.0, latency_ms=10.0),
    "datacenter": Link(uplink_mbps=10_000.0, downlink_mbps=10_000.0, latency_ms=0.5),
}


class NetworkSettings(Section):
    """``network:`` the links and devices that modelled round times assume (reports only; nothing sleeps)."""

    preset: Literal["edge-4g", "wifi", "datacenter"] = Field(
        "edge-4g", description="Named link (numbers and sources in federa.modelled_time); the fields below override it.")
    uplink_mbps: float | None = Field(None, gt=0, description="Client → server megabits per second.")
    downlink_mbps: float | None = Field(None, gt=0, description="Server → client megabits per second.")
    latency_ms: float | None = Field(None, ge=0, description="One-way latency, paid once per transfer.")
    compute_scale: float = Field(1.0, gt=0, description="Client devices' slowness vs the measuring machine (2 = half as fast).")
    speed_sigma: float = Field(0.0, ge=0, description="Spread (log-normal sigma) of per-client speed factors; 0: all alike.")
    speed_seed: int | None = Field(None, description="Seed of the speed factors; None: the run's seed.")

    def link(self) -> Link:
        base = PRESETS[self.preset]
        return Link(
            uplink_mbps=self.uplink_mbps if self.uplink_mbps is not None else base.uplink_mbps,
            downlink_mbps=self.downlink_mbps if self.downlink_mbps is not None else base.downlink_mbps,
            latency_ms=self.latency_ms if self.latency_ms is not None else base.latency_ms,
        )

    def describe(self) -> str:
        link = self.link()
        text = (f"network.preset={self.preset} (uplink {link.uplink_mbps:g} Mbps, downlink {link.downlink_mbps:g} Mbps, "
                f"latency {link.latency_ms:g} ms)")
        if self.compute_scale != 1.0 or self.speed_sigma > 0:
            text += f", client speed ×{self.compute_scale:g} with log-normal spread σ={self.speed_sigma:g}"
        return text


def speed_factors(settings: NetworkSettings, num_clients: int, seed: int) -> np.ndarray:
    """Each client's compute-time multiplier, fixed for the run (seeded, so stragglers repeat)."""
    if settings.speed_sigma == 0:
        return np.full(num_clients, settings.compute_scale)
    rng = np.random.default_rng(settings.speed_seed if settings.speed_seed is not None else seed)
    return settings.compute_scale * np.exp(rng.normal(0.0, settings.speed_sigma, num_clients))


def transfer_s(num_bytes: float, mbps: float, latency_ms: float) -> float:
    return latency_ms / 1000 + 8 * num_bytes / (mbps * 1e6)


def client_time_s(link: Link, bytes_down: float, compute_s: float, bytes_up: float, speed: float = 1.0) -> float:
    """One client's share of a round: download, local training at its speed, upload."""
    return (transfer_s(bytes_down, link.downlink_mbps, link.latency_ms) + compute_s * speed
            + transfer_s(bytes_up, link.uplink_mbps, link.latency_ms))


def round_time_s(link: Link, clients: Sequence[tuple[float, float, float]], speeds: Sequence[float],
                 aggregate_s: float = 0.0) -> float:
    """A synchronous round: the slowest of ``clients`` ((bytes down, compute s, bytes up) each), then aggregation."""
    slowest = max((client_time_s(link, d, c, u, s) for (d, c, u), s in zip(clients, speeds, strict=True)), default=0.0)
    return slowest + aggregate_s


def record_round_s(record: Mapping[str, Any], link: Link, speeds: Sequence[float]) -> float | None:
    """The modelled time of the round a metrics record logged; None for round 0 or records without
    per-client figures (runs made before they were logged)."""
    if record.get("round", 0) == 0 or "client_train_s" not in record:
        return None
    ids = record["clients"]
    if isinstance(ids, str):  # results.csv joins the ids with spaces
        ids = [int(c) for c in ids.split()]
    clients = list(zip(record["client_bytes_down"], record["client_train_s"], record["client_bytes_up"], strict=True))
    return round_time_s(link, clients, [speeds[c] for c in ids], record.get("aggregate_s") or 0.0)


def cumulative_modelled_s(records: Sequence[Mapping[str, Any]], settings: NetworkSettings, num_clients: int,
                          seed: int) -> dict[int, float] | None:
    """Round → modelled seconds since round 0, from one method's records in round order.

    Records that carry ``cum_modelled_s`` were priced during the run, every round included, under
    the run's own ``network.*`` (pass those settings): they are read as they are. Older records are
    priced here from their per-client figures; exact with ``eval_every=1``, otherwise a logged
    round's time stands for the unlogged rounds before it. None when neither is there.
    """
    if records and all("cum_modelled_s" in r for r in records if r["round"] > 0):
        return {r["round"]: (r["cum_modelled_s"] if r["round"] > 0 else 0.0) for r in records}
    link, speeds = settings.link(), speed_factors(settings, num_clients, seed)
    out: dict[int, float] = {}
    total, prev = 0.0, 0
    for r in sorted(records, key=lambda r: r["round"]):
        if r["round"] == 0:
            out[0] = 0.0
            continue
        t = record_round_s(r, link, speeds)
        if t is None:
            return None
        total += t * (r["round"] - prev)
        prev = r["round"]
        out[r["round"]] = total
    return out
