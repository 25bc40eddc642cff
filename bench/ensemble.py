"""Ensemble benchmark: one request to an ensemble against a client calling its members one after another.

    python -m bench.ensemble [--out bench/results] [--duration 5] [--rounds 3]

Serves the example repository (fraud, credit_score, and the two composites over them) as
``infergrid serve`` does, then at concurrency 1, 16 and 64 measures, side by side in one run and
in interleaved rounds (the machine is noisy; medians are reported):

* ``risk_ensemble`` (the config-driven ensemble: fraud and credit_score on one request) against
  a client that POSTs the same tensors to ``fraud``, waits, then to ``credit_score``;
* ``loan_decision`` (the Python pipeline, raw fields in, decision out, v2 infer) against a client
  that calls the two members one after another with the features already built (its own feature
  and decision work is not counted, which favours the client);
* ``loan_decision``'s plain JSON, alone: at its model path ``POST /v2/models/loan_decision``
  (straight to the pipeline) and at ``POST /pipelines/loan_decision`` (one more hop: the server
  ingress hands it over through a DeploymentHandle).

Every point is one ``bench.loadgen`` process (closed loop, keep-alive; a client's round of two
calls counts as one operation, latency of both). Writes ``ensemble.md`` and ``ensemble.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.run import ROOT, start_serving

sys.path.insert(0, str(ROOT / "examples"))

CONCURRENCY = (1, 16, 64)
RECORD = {"amount": 640.0, "merchant_category": "electronics", "hour": 21.0, "account_age_days": 400.0,
          "distance_km": 12.0, "transactions_24h": 3.0, "annual_income": 48000.0, "monthly_debt": 700.0,
          "credit_history_years": 6.0, "credit_utilization": 0.4, "late_payments": 1.0}


def v2_body(tensors: dict[str, np.ndarray]) -> bytes:
    inputs = []
    for name, array in tensors.items():
        datatype = "BYTES" if array.dtype == object else "FP32"
        data = [v.decode() if isinstance(v, bytes) else float(v) for v in array.ravel()]
        inputs.append({"name": name, "shape": list(array.shape), "datatype": datatype, "data": data})
    return json.dumps({"inputs": inputs}).encode()


def workloads(base: str) -> dict[str, list[tuple[str, bytes]]]:
    """name -> the (url, body) calls of one operation."""
    from pipelines.loan_decision import credit_features, fraud_features, records_to_tensors

    rng = np.random.default_rng(0)
    transaction = rng.standard_normal((1, 16)).astype(np.float32)
    applicant = rng.standard_normal((1, 8)).astype(np.float32)
    columns, _ = records_to_tensors(RECORD)
    model = f"{base}/v2/models"
    return {
        "risk_ensemble": [(f"{model}/risk_ensemble/infer", v2_body({"transaction": transaction,
                                                                    "applicant": applicant}))],
        "risk: members one after another": [(f"{model}/fraud/infer", v2_body({"features": transaction})),
                                            (f"{model}/credit_score/infer", v2_body({"applicant": applicant}))],
        "loan_decision (v2)": [(f"{model}/loan_decision/infer", v2_body(columns))],
        "loan: members one after another": [
            (f"{model}/fraud/infer", v2_body({"features": fraud_features(columns)})),
            (f"{model}/credit_score/infer", v2_body({"applicant": credit_features(columns)}))],
        "loan_decision (JSON at its model path)": [(f"{model}/loan_decision", json.dumps(RECORD).encode())],
        "loan_decision (JSON at /pipelines)": [(f"{base}/pipelines/loan_decision", json.dumps(RECORD).encode())],
    }


PAIRS = (("risk_ensemble", "risk: members one after another"),
         ("loan_decision (v2)", "loan: members one after another"))


def measure(calls: list[tuple[str, bytes]], connections: int, seconds: float, workdir: Path) -> dict:
    command = [sys.executable, "-m", "bench.loadgen", "--connections", str(connections), "--duration", str(seconds)]
    for index, (url, body) in enumerate(calls):
        path = workdir / f"body{index}.json"
        path.write_bytes(body)
        command += ["--url", url, "--body", str(path)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def median_row(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in ("qps", "p50_ms", "p99_ms")} | \
           {"errors": sum(r["errors"] for r in results), "requests": sum(r["requests"] for r in results),
            "rounds": [{k: round(r[k], 2) for k in ("qps", "p50_ms", "p99_ms")} for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8960)
    args = parser.parse_args()
    command = "python -m bench.ensemble " + " ".join(sys.argv[1:])
    from build_repository import build_repository

    with tempfile.TemporaryDirectory(prefix="infergrid-bench-") as tmp:
        workdir = Path(tmp)
        repository = build_repository(workdir / "repo",
                                      only=("fraud", "credit_score", "risk_ensemble", "loan_decision"))
        base = start_serving(repository, args.port)
        loads = workloads(base)
        for calls in loads.values():  # warm-up: every route, member batch queues
            measure(calls, 16, 2, workdir)
        raw: dict[tuple[str, int], list[dict]] = {}
        for round_index in range(args.rounds):
            for connections in CONCURRENCY:
                for name, calls in loads.items():
                    result = measure(calls, connections, args.duration, workdir)
                    raw.setdefault((name, connections), []).append(result)
                    print(f"round {round_index + 1} {name:34} c={connections:<3} {result['qps']:8.1f} ops/s  "
                          f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                          f"errors {result['errors']}", flush=True)
        rows = [{"workload": name, "concurrency": c, **median_row(results)} for (name, c), results in raw.items()]
        write_results(Path(args.out), rows, command)
        import ray

        ray.shutdown()


def _row(rows: list[dict], name: str, connections: int) -> dict:
    return next(r for r in rows if r["workload"] == name and r["concurrency"] == connections)


def comparisons(rows: list[dict]) -> list[dict]:
    """Composite against its sequential client, per concurrency: throughput and latency ratios."""
    out = []
    for composite, client in PAIRS:
        for connections in CONCURRENCY:
            ours, theirs = _row(rows, composite, connections), _row(rows, client, connections)
            out.append({"composite": composite, "concurrency": connections,
                        "qps_ratio": ours["qps"] / theirs["qps"], "p50_ratio": ours["p50_ms"] / theirs["p50_ms"],
                        "p99_ratio": ours["p99_ms"] / theirs["p99_ms"],
                        "wins": ours["qps"] > theirs["qps"] and ours["p50_ms"] < theirs["p50_ms"]})
    return out


def write_results(out: Path, rows: list[dict], command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    compared = comparisons(rows)
    meta = {"date": time.strftime("%Y-%m-%d"), "command": command, "machine": f"{platform.machine()}, "
            f"{__import__('os').cpu_count()} CPUs, {platform.python_version()}"}
    (out / "ensemble.json").write_text(json.dumps({**meta, "rows": rows, "comparisons": compared}, indent=2))
    lines = [f"# Ensembles against a client calling the members one after another ({meta['date']})", "",
             f"Command: `{command}` (machine: {meta['machine']}). Medians of the rounds; one operation is one",
             "ensemble request, or the client's two member calls in a row.", "",
             "| workload | concurrency | ops/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['concurrency']} | {r['qps']:,.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", "| composite / sequential client | concurrency | ops/s ratio | p50 ratio | p99 ratio | wins |",
              "|---|---:|---:|---:|---:|---|"]
    for c in compared:
        lines.append(f"| {c['composite']} | {c['concurrency']} | {c['qps_ratio']:.2f} | {c['p50_ratio']:.2f} | "
                     f"{c['p99_ratio']:.2f} | {'yes' if c['wins'] else 'NO'} |")
    (out / "ensemble.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
