"""The peers' TorchServe archive served by TorchServe and by infergrid, side by side in one run.

    ../shared/peers/setup.sh                        # once: wrk and TorchServe 0.12 in /tmp/peers/ts
                                                    # (PEERS_SRC: another copy of ../shared/peers)
    python -m bench.torchserve_archive --out bench/results [--seconds 15] [--rounds 3] [--conns 1,16,64]

The peers' model (``../shared/peers/export_model.py``: the fraud MLP, TorchScript) in the peers' archive
(``torchserve/fraud_handler.py``, a ``BaseHandler``), built once by ``torch-model-archiver``, with the
peers' ``config.properties`` (batchSize 32, maxBatchDelay 5 ms, one worker). Each round starts
TorchServe (``torchserve --start --ts-config``) and then infergrid (``infergrid serve --ts-config
config.properties --model-store DIR``: the same file, the same archive, the same handler), each alone,
checks its answer, warms it for 3 s and drives ``POST /predictions/fraud`` with wrk at each connection
count; the order flips every round. Ratios are paired within a round (infergrid / TorchServe).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.run import ROOT

PEERS = Path(os.environ.get("PEERS_SRC") or ROOT.parent / "shared" / "peers")  # the peers' files (read-only)
TS_VENV = Path(os.environ.get("PEERS_DIR", "/tmp/peers")) / "ts"
_WRK = re.compile(r"RESULT qps=(\S+) p50_ms=(\S+) p99_ms=(\S+) errors=(\d+) requests=(\d+)")
_PORT = 18080
_URL = f"http://127.0.0.1:{_PORT}/predictions/fraud"


def build(work: Path) -> tuple[Path, Path, float]:
    """(model store with fraud.mar, config.properties, the reference answer), as run_peers.sh builds them."""
    model = work / "model"
    subprocess.run([sys.executable, str(PEERS / "export_model.py"), str(model)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "model_archiver.model_packaging", "--model-name", "fraud", "--version",
                    "1.0", "--serialized-file", str(model / "fraud.pt"), "--handler",
                    str(PEERS / "torchserve" / "fraud_handler.py"), "--export-path", str(model), "--force"],
                   check=True, capture_output=True)
    config = work / "config.properties"
    config.write_text((PEERS / "torchserve" / "config.properties").read_text() + "load_models=fraud.mar\n" +
                      'models={"fraud":{"1.0":{"defaultVersion":true,"marName":"fraud.mar","minWorkers":1,'
                      '"maxWorkers":1,"batchSize":32,"maxBatchDelay":5,"responseTimeout":60}}}\n')
    return model, config, json.loads((model / "reference.json").read_text())["prob"]


def start(peer: str, work: Path, store: Path, config: Path) -> subprocess.Popen:
    """Start ``peer`` (``torchserve`` or ``infergrid``) in its own session; returns once it answers."""
    folder = work / peer
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(folder), "TEMP": str(folder), "INFERGRID_MAR_CACHE": str(folder / "mar")}
    env.pop("RAY_ADDRESS", None)
    if peer == "torchserve":
        command = [str(TS_VENV / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--ts-config", str(config),
                   "--model-store", str(store)]
    else:
        command = [str(ROOT / ".venv" / "bin" / "infergrid"), "serve", "--ts-config", str(config), "--model-store",
                   str(store), "--port", "18200", "--grpc-port", "0", "--metrics-port", "0"]
    with (folder / "log.txt").open("w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.post(_URL, data=_body(), headers={"Content-Type": "application/json"}, timeout=5).ok:
                return process
        except requests.RequestException:
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError(f"{peer} did not come up: {(folder / 'log.txt').read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (TorchServe's launcher stops its frontend and worker), then the session's leftovers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(2)
    subprocess.run(["pkill", "-f", "ts.model_service_worker"], check=False)


def _body() -> bytes:
    row = [round((i - 15) / 10, 1) for i in range(30)]
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": row}]}).encode()


def wrk(conns: int, seconds: int) -> dict:
    """One wrk point against ``/predictions/fraud`` with the peers' script."""
    threads = 1 if conns < 2 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s",
                          str(PEERS / "wrk" / "v2_post.lua"), _URL], capture_output=True, text=True, check=True)
    qps, p50, p99, errors, total = _WRK.search(out.stdout).groups()
    return {"qps": float(qps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors),
            "requests": int(total)}


def _check(reference: float) -> None:
    answer = requests.post(_URL, data=_body(), headers={"Content-Type": "application/json"}, timeout=30).json()
    got = answer["outputs"][0]["data"][0]
    assert abs(got - reference) < 1e-5, (got, reference)


def run(work: Path, seconds: int, rounds: int, conns: list[int]) -> list[dict]:
    store, config, reference = build(work)
    rows, order = [], ["torchserve", "infergrid"]
    for round_number in range(1, rounds + 1):
        for peer in order:
            process = start(peer, work, store, config)
            try:
                _check(reference)
                wrk(16, 3)  # warm-up: TorchScript's profiling executor, the JVM's JIT
                for conn in conns:
                    point = {"round": round_number, "peer": peer, "conns": conn, **wrk(conn, seconds)}
                    print(json.dumps(point), flush=True)
                    rows.append(point)
            finally:
                stop(process)
        order.reverse()
    return rows


def report(rows: list[dict], command: str) -> str:
    """Medians over rounds, ratios paired within each round."""
    lines = ["# The peers' TorchServe archive: TorchServe 0.12 vs infergrid (`/predictions/fraud`)", "",
             f"`{command}` on {os.cpu_count()} cores, {platform.platform()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "Same archive (peers' fraud_handler.py, batchSize 32, maxBatchDelay 5 ms, one worker), same "
             "config.properties, same wrk script; wrk on the same cores as the server.", "",
             "| peer | conns | QPS | p50 ms | p99 ms | errors | QPS / TorchServe | p50 / TorchServe |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for conn in sorted({r["conns"] for r in rows}):
        for peer in ("torchserve", "infergrid"):
            mine = [r for r in rows if r["peer"] == peer and r["conns"] == conn]
            if not mine:
                continue
            pairs = [(r, next((t for t in rows if t["peer"] == "torchserve" and t["conns"] == conn
                               and t["round"] == r["round"]), None)) for r in mine]
            qps_ratio = statistics.median(r["qps"] / t["qps"] for r, t in pairs if t and t["qps"])
            p50_ratio = statistics.median(r["p50_ms"] / t["p50_ms"] for r, t in pairs if t and t["p50_ms"])
            lines.append(f"| {peer} | {conn} | {statistics.median(r['qps'] for r in mine):.0f} | "
                         f"{statistics.median(r['p50_ms'] for r in mine):.2f} | "
                         f"{statistics.median(r['p99_ms'] for r in mine):.2f} | {sum(r['errors'] for r in mine)} | "
                         f"{qps_ratio:.2f} | {p50_ratio:.2f} |")
    lines += ["", "QPS per round:", ""]
    for r in rows:
        lines.append(f"- round {r['round']} {r['peer']} c{r['conns']}: {r['qps']:.0f} QPS, p99 {r['p99_ms']:.2f} ms")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", default="1,16,64")
    parser.add_argument("--work", type=Path, default=Path("/tmp/infergrid-bench-ts"))
    args = parser.parse_args()
    if not (TS_VENV / "bin" / "torchserve").exists() or shutil.which("wrk") is None:
        print(f"run {PEERS / 'setup.sh'} first (TorchServe in {TS_VENV}, wrk)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    rows = run(args.work, args.seconds, args.rounds, [int(c) for c in args.conns.split(",")])
    command = " ".join(["python -m bench.torchserve_archive", *sys.argv[1:]])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torchserve_archive.json").write_text(json.dumps(rows, indent=1))
    (args.out / "torchserve_archive.md").write_text(report(rows, command))
    print(report(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
