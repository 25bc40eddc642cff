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

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.run import ROOT, start_serving
from bench.pairs import bench_arguments, interleaved, paired_table, save, script, wrk

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


def report(rows: list[dict], command: str) -> str:
    lines = ["# The cost of a traffic policy: one version, a policy, a 50/50 split, 100% shadowing (fraud, ONNX)", "",
             f"`{command}` on {os.cpu_count()} cores, {platform.platform()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wrk on the same cores.", "",
             "| policy | conns | QPS | p50 ms | p99 ms | errors | QPS / single |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += paired_table(rows, "policy", list(POLICIES), "single")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = bench_arguments(__doc__.splitlines()[0], 8133)
    folder = Path(tempfile.mkdtemp(prefix="traffic-policy-"))
    base = start_serving(repository(folder), args.port)
    lua = script(folder)
    for name in POLICIES:  # warm-up, and the policy in force
        wrk(f"{base}/v2/models/{name}/infer", lua, 16, 2)
    assert requests.get(f"{base}/v2/repository/models/split/traffic", timeout=30).json()["policy"]
    rows = interleaved(base, lua, list(POLICIES), "policy", args.conn_counts, args.rounds,
                       args.seconds)
    save(args.out, "traffic_policy", rows, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
