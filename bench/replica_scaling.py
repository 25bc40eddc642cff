"""Throughput of one model on 1, 2 and 4 fixed replicas and autoscaled (1..4), side by side in one run.

    python -m bench.replica_scaling --out bench/results [--seconds 10] [--rounds 3] [--conns 16,64]

Serves four copies of the example ``fraud`` model (ONNX): ``replicas_1``, ``replicas_2`` and ``replicas_4``
(``instance_group.count``), and ``autoscaled`` (``autoscaling.min_replicas`` 1, ``max_replicas`` 4, the
default target: one full batch outstanding per replica, ``upscale_delay_s`` 1). wrk drives
``POST /v2/models/<copy>/infer`` at each connection count, interleaved per round, the order flipped every
round; ratios are paired within a round against ``replicas_1``. ``autoscaled`` reports the replicas it ran
at the end of each of its runs (from ``/metrics``).
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

COPIES = {"replicas_1": 1, "replicas_2": 2, "replicas_4": 4, "autoscaled": 1}
AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 1, "downscale_delay_s": 30}


def repository(folder: Path) -> Path:
    from build_repository import FRAUD_CONFIG, build_fraud

    root = folder / "repo"
    for name, count in COPIES.items():
        (root / name).mkdir(parents=True)
        text = FRAUD_CONFIG.replace('name: "fraud"', f'name: "{name}"').replace("count: 1", f"count: {count}")
        if name == "autoscaled":
            text += "".join(f'parameters {{ key: "autoscaling.{k}" value {{ string_value: "{v}" }} }}\n'
                            for k, v in AUTOSCALING.items())
        (root / name / "config.pbtxt").write_text(text)
        build_fraud(root / name / "1", seed=1)
    return root


def live_replicas(base: str, model: str) -> float:
    prefix = "infergrid_model_replicas{"
    for line in requests.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith(prefix) and f'model="{model}"' in line:
            return float(line.split()[-1])
    return 0.0


def report(rows: list[dict], command: str) -> str:
    lines = ["# Throughput on 1, 2, 4 replicas and autoscaled (fraud, ONNX)", "",
             f"`{command}` on {os.cpu_count()} cores, {platform.platform()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wrk on the same cores.", "",
             "| copy | conns | QPS | p50 ms | p99 ms | errors | QPS / 1 replica | replicas at the end |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += paired_table(rows, "copy", list(COPIES), "replicas_1",
                          lambda mine: f"{max(r['replicas'] for r in mine):.0f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = bench_arguments(__doc__.splitlines()[0], 8134)
    folder = Path(tempfile.mkdtemp(prefix="replica-scaling-"))
    base = start_serving(repository(folder), args.port)
    lua = script(folder)
    for name in COPIES:  # warm-up
        wrk(f"{base}/v2/models/{name}/infer", lua, 16, 2)
    rows = interleaved(base, lua, list(COPIES), "copy", args.conn_counts, args.rounds,
                       args.seconds, after=lambda name: {"replicas": live_replicas(base, name)})
    save(args.out, "replica_scaling", rows, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
