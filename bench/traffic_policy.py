"""The cost of a traffic policy: one version alone, a policy sending it everything, a 50/50 split, and
100% shadowing, in one run.

    python -m bench.traffic_policy --out bench/results [--seconds 10] [--rounds 3] [--conns 64]

Serves five copies of the example ``fraud`` model (ONNX), each with versions 1 and 2 loaded: ``single``
(no policy: every request to version 2), ``policy_100`` (``2: 100, 1: 0``: the policy's own cost, the same
routing), ``single_x2`` (no policy, version 2 on two replicas: the split's replica count), ``split``
(``1: 50, 2: 50``: two replicas share the load, each batching half of it) and ``shadow``
(``2: 100`` with version 1 shadowing every request). wrk drives ``POST /v2/models/<copy>/infer`` at each
connection count, interleaved per round, the order flipped every round. Ratios are paired within a round
against ``single``: the policy should cost nothing measurable (target: <= 5% of QPS); a split costs
what serving two versions at once costs on these cores; the shadow doubles the model work, so its
QPS may drop by up to half (its own share of the capacity), never more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.run import ROOT, start_serving
from bench.tfserving_predict import _DONE, _WRK

sys.path.insert(0, str(ROOT / "examples"))

POLICIES = {"single": None, "policy_100": {"weights": {"2": 100, "1": 0}}, "single_x2": None,
            "split": {"weights": {"1": 50, "2": 50}},
            "shadow": {"weights": {"2": 100}, "shadow": {"version": 1, "share": 1.0}}}
REPLICAS = {"single_x2": 2}  # one version on two replicas: the split's replica count, without a policy


def repository(folder: Path) -> Path:
    """A copy of fraud per policy, versions 1 and 2 each (version_policy all), their traffic.json written."""
    from build_repository import FRAUD_CONFIG, build_fraud

    from deployments.repository.traffic import TrafficPolicy, write_traffic

    root = folder / "repo"
    for name, policy in POLICIES.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(FRAUD_CONFIG.replace('name: "fraud"', f'name: "{name}"')
                                                  .replace("latest { num_versions: 1 }", "all { }")
                                                  .replace("count: 1", f"count: {REPLICAS.get(name, 1)}"))
        build_fraud(root / name / "1", seed=1)
        build_fraud(root / name / "2", seed=2)
        if policy is not None:
            write_traffic(root / name, TrafficPolicy.from_dict(policy, name))
    return root


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


def report(rows: list[dict], command: str) -> str:
    lines = ["# The cost of a traffic policy: one version, a policy, a 50/50 split, 100% shadowing (fraud, ONNX)", "",
             f"`{command}` on {os.cpu_count()} cores, {platform.platform()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wrk on the same cores.", "",
             "| policy | conns | QPS | p50 ms | p99 ms | errors | QPS / single |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for conns in sorted({r["conns"] for r in rows}):
        for name in POLICIES:
            mine = [r for r in rows if r["policy"] == name and r["conns"] == conns]
            ratios = [r["qps"] / s["qps"] for r in mine for s in rows if s["policy"] == "single"
                      and s["conns"] == conns and s["round"] == r["round"] and s["qps"]]
            lines.append(f"| {name} | {conns} | {statistics.median(r['qps'] for r in mine):.0f} | "
                         f"{statistics.median(r['p50_ms'] for r in mine):.2f} | "
                         f"{statistics.median(r['p99_ms'] for r in mine):.2f} | {sum(r['errors'] for r in mine)} | "
                         f"{statistics.median(ratios):.2f} |")
    lines += ["", "Per round: " + "; ".join(f"r{r['round']} {r['policy']} c{r['conns']} {r['qps']:.0f}" for r in rows)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", default="16,64")
    parser.add_argument("--port", type=int, default=8133)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    folder = Path(tempfile.mkdtemp(prefix="traffic-policy-"))
    base = start_serving(repository(folder), args.port)
    lua, rows, order = script(folder), [], list(POLICIES)
    for name in POLICIES:  # warm-up, and the policy in force
        wrk(f"{base}/v2/models/{name}/infer", lua, 16, 2)
    assert requests.get(f"{base}/v2/repository/models/split/traffic", timeout=30).json()["policy"]
    for round_number in range(1, args.rounds + 1):
        for conns in (int(c) for c in args.conns.split(",")):
            for name in order:
                row = {"round": round_number, "policy": name, "conns": conns,
                       **wrk(f"{base}/v2/models/{name}/infer", lua, conns, args.seconds)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        order.reverse()
    command = " ".join(["python -m bench.traffic_policy", *sys.argv[1:]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "traffic_policy.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    (args.out / "traffic_policy.md").write_text(report(rows, command))
    print(report(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
