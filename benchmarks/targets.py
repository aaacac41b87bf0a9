"""Issue 5's serving targets, each checked against one run's numbers: one row per target and server."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.floor import FLOOR_SUMS, FORWARD
from benchmarks.rounds import Results, Summary
from benchmarks.servers import BASELINE, ServerConfig
from benchmarks.tables import median, table
from service.config import Settings

SMALL_RPS_VS_NAIVE = 2.0  # small /predict, c=32
LARGE_PREDICT_P50_VS_FLOOR = 1.3  # large /predict JSON, c=1, over its in-process floor
LARGE_OIP_JSON_RPS, LARGE_OIP_JSON_P50_MS = 120.0, 8.0  # large OIP JSON, c=1
BINARY_VS_JSON_P50 = 5.0  # large OIP binary p50, this many times faster than large /predict JSON
BATCHING_RPS = 1.3  # small /predict at c=64, batching on over off
READY_S = 3.0

Row = list[str]  # target, server, measured, met


def row(target: str, server: str, measured: str, met: bool) -> Row:
    return [target, server, measured, "yes" if met else "**no**"]


def route_floor_ms(floor_us: dict[str, float], label: str) -> float:
    decode, encode = FLOOR_SUMS[label]
    return (floor_us[decode] + floor_us[FORWARD] + floor_us[encode]) / 1e3


def small_vs_naive(config: ServerConfig, summary: Summary) -> list[Row]:
    s, base = summary.get((config.name, "predict", "small", 32)), summary.get((BASELINE, "predict", "small", 32))
    if not (s and base):
        return []
    measured = f"{s['rps']:.0f} vs {base['rps']:.0f} req/s = {s['rps'] / base['rps']:.2f}×"
    target = f"small /predict c=32: ≥ {SMALL_RPS_VS_NAIVE:g}× naive req/s"
    return [row(target, config.name, measured, s["rps"] >= SMALL_RPS_VS_NAIVE * base["rps"])]


def large_routes(config: ServerConfig, summary: Summary, large: dict[str, float] | None) -> list[Row]:
    """Large payload at c=1: /predict JSON against its floor, OIP JSON's rate and latency, binary against JSON."""
    if large is None:
        return []
    rows = []
    predict = summary.get((config.name, "predict", "large", 1))
    if predict:
        bound = route_floor_ms(large, "/predict floor (orjson)")
        tensor_bound = route_floor_ms(large, "/predict floor with a tensor (orjson + np.asarray)")
        measured = (
            f"p50 {predict['p50_ms']:.2f} ms vs floor {bound:.2f} ms = {predict['p50_ms'] / bound:.2f}× "
            f"({predict['p50_ms'] / tensor_bound:.2f}× the floor that also makes the tensor, {tensor_bound:.2f} ms)"
        )
        target = f"large /predict JSON c=1: p50 ≤ {LARGE_PREDICT_P50_VS_FLOOR:g}× floor"
        rows.append(row(target, config.name, measured, predict["p50_ms"] <= LARGE_PREDICT_P50_VS_FLOOR * bound))
    oip = summary.get((config.name, "oip_json", "large", 1))
    if oip:
        ceiling = 1e3 / route_floor_ms(large, "OIP JSON floor (orjson)")
        measured = f"{oip['rps']:.1f} req/s, p50 {oip['p50_ms']:.2f} ms (the floor allows {ceiling:.0f} req/s per core)"
        target = f"large OIP JSON c=1: ≥ {LARGE_OIP_JSON_RPS:g} req/s, p50 ≤ {LARGE_OIP_JSON_P50_MS:g} ms"
        met = oip["rps"] >= LARGE_OIP_JSON_RPS and oip["p50_ms"] <= LARGE_OIP_JSON_P50_MS
        rows.append(row(target, config.name, measured, met))
    binary = summary.get((config.name, "oip_binary", "large", 1))
    if binary and predict:
        bound = route_floor_ms(large, "/predict floor (orjson)") / route_floor_ms(large, "OIP binary floor")
        measured = (
            f"{predict['p50_ms']:.2f} / {binary['p50_ms']:.2f} ms = {predict['p50_ms'] / binary['p50_ms']:.2f}× "
            f"(the floors allow {bound:.2f}×)"
        )
        target = f"large OIP binary c=1: p50 ≥ {BINARY_VS_JSON_P50:g}× faster than /predict JSON"
        rows.append(row(target, config.name, measured, predict["p50_ms"] >= BINARY_VS_JSON_P50 * binary["p50_ms"]))
    return rows


def batching(config: ServerConfig, summary: Summary, names: set[str]) -> list[Row]:
    """Batching on against the same server with it off: more req/s at c=64, at most the max wait more at c=1."""
    off_name = f"{config.name} no batching"
    if config.env.get("LSTM_BATCHING") == "false" or off_name not in names:
        return []
    rows = []
    wait_ms = float(Settings.model_fields["batch_max_wait_ms"].default)
    on, off = summary.get((config.name, "predict", "small", 64)), summary.get((off_name, "predict", "small", 64))
    if on and off:
        measured = f"{on['rps']:.0f} vs {off['rps']:.0f} req/s = {on['rps'] / off['rps']:.2f}×"
        target = f"batching, small /predict c=64: ≥ {BATCHING_RPS:g}× req/s of off"
        rows.append(row(target, config.name, measured, on["rps"] >= BATCHING_RPS * off["rps"]))
    on, off = summary.get((config.name, "predict", "small", 1)), summary.get((off_name, "predict", "small", 1))
    if on and off:
        measured = f"p50 {on['p50_ms']:.3f} ms on, {off['p50_ms']:.3f} ms off (max wait {wait_ms:g} ms)"
        target = "batching, small /predict c=1: p50 ≤ off + max wait"
        rows.append(row(target, config.name, measured, on["p50_ms"] <= off["p50_ms"] + wait_ms))
    return rows


def readiness(config: ServerConfig, results: Results) -> list[Row]:
    starts = results.starts.get(config.name, [])
    if not starts:
        return []
    ready = median([s.ready_s for s in starts])
    every = median([s.all_ready_s for s in starts])
    rss = median([v for s in starts for v in s.worker_rss_mib])
    measured = f"{ready:.2f} s to the first 200, {every:.2f} s until every worker started; {rss:.0f} MiB/worker"
    return [row(f"ready ≤ {READY_S:g} s, memory per worker reported", config.name, measured, every <= READY_S)]


def targets_report(
    configs: Sequence[ServerConfig], summary: Summary, floor_us: dict[str, dict[str, float]], results: Results
) -> list[str]:
    """One row per target and server: what this run measured against what issue 5 asks."""
    lstm = [c for c in configs if c.app == "lstm"]
    names = {c.name for c in configs}
    rows: list[Row] = []
    if BASELINE in names:
        rows += [r for c in lstm for r in small_vs_naive(c, summary)]
    rows += [r for c in lstm for r in large_routes(c, summary, floor_us.get("large"))]
    rows += [r for c in lstm for r in batching(c, summary, names)]
    rows += [r for c in lstm for r in readiness(c, results)]
    if not rows:
        return []
    out = ["### Targets (issue 5), from this run", ""]
    out += table(["target", "server", "measured (medians)", "met"], rows)
    out.append("")
    out.append(
        "Floors are the in-process medians below (decode + forward + encode with orjson and one torch thread). "
        "'The floors allow' is the best any server could do on this machine with this model: the forward alone "
        "bounds both routes. /predict p99 during a training job is measured by benchmarks/train_load.py."
    )
    out.append("")
    return out
