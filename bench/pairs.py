"""Interleaved wrk runs over several models and their table of ratios paired within a round.

These machines are noisy, so a comparison is made of runs taken side by side: each round runs every
model once per connection count, the order flipped every round, and a model's ratio to the baseline is
the median of its ratios within the same round and connection count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.tfserving_predict import _DONE, _WRK

__all__ = ["interleaved", "paired_table", "script", "wrk", "bench_arguments", "save"]


def script(folder: Path) -> Path:
    body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.1] * 16}]}
    path = folder / "fraud.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = '{json.dumps(body)}'\n{_DONE}")
    return path


def wrk(url: str, lua: Path, conns: int, seconds: int) -> dict:
    done = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
                           "-s", str(lua), url], capture_output=True, text=True, check=True)
    qps, p50, p99, errors, total = _WRK.search(done.stdout).groups()
    return {"qps": float(qps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors),
            "requests": int(total)}


def interleaved(base: str, lua: Path, names: Sequence[str], key: str, conns: Sequence[int], rounds: int,
                seconds: int, after: Callable[[str], dict] | None = None) -> list[dict]:
    """Rows of ``{"round", key: name, "conns", qps, p50_ms, p99_ms, errors, requests}`` (+ ``after(name)``)."""
    rows, order = [], list(names)
    for round_number in range(1, rounds + 1):
        for count in conns:
            for name in order:
                row = {"round": round_number, key: name, "conns": count,
                       **wrk(f"{base}/v2/models/{name}/infer", lua, count, seconds)}
                if after is not None:
                    row.update(after(name))
                print(json.dumps(row), flush=True)
                rows.append(row)
        order.reverse()
    return rows


def paired_table(rows: list[dict], key: str, names: Sequence[str], baseline: str,
                 extra: Callable[[list[dict]], str] | None = None) -> list[str]:
    """One markdown row per (connections, name): medians of QPS, p50, p99, errors summed, the paired ratio
    to ``baseline`` and, with ``extra``, one more cell computed from the name's rows."""
    lines = []
    for conns in sorted({r["conns"] for r in rows}):
        for name in names:
            mine = [r for r in rows if r[key] == name and r["conns"] == conns]
            ratios = [r["qps"] / s["qps"] for r in mine for s in rows if s[key] == baseline
                      and s["conns"] == conns and s["round"] == r["round"] and s["qps"]]
            cells = [name, str(conns), f"{statistics.median(r['qps'] for r in mine):.0f}",
                     f"{statistics.median(r['p50_ms'] for r in mine):.2f}",
                     f"{statistics.median(r['p99_ms'] for r in mine):.2f}", str(sum(r["errors"] for r in mine)),
                     f"{statistics.median(ratios):.2f}"] + ([extra(mine)] if extra is not None else [])
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per round: " + "; ".join(f"r{r['round']} {r[key]} c{r['conns']} {r['qps']:.0f}" for r in rows)]
    return lines


def bench_arguments(description: str, port: int) -> argparse.Namespace:
    """The flags every interleaved wrk bench takes; exits when wrk is missing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", default="16,64")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    args.conn_counts = [int(c) for c in args.conns.split(",")]
    return args


def save(out: Path, name: str, rows: list[dict], report: Callable[[list[dict], str], str]) -> None:
    """Write ``<name>.json`` (rows and the command) and ``<name>.md`` (the report) under ``out``; print it."""
    command = " ".join([f"python -m bench.{name}", *sys.argv[1:]])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    text = report(rows, command)
    (out / f"{name}.md").write_text(text)
    print(text)
