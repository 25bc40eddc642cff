"""TF Serving's seed benchmark: ResNet-50 ``:predict``, one JSON image per request, beside v2 binary.

    python -m bench.tfserving_predict --out bench/results [--seconds 10] [--conns 1,16,64]

Serves the example ``resnet50`` (TorchScript) and drives it with ``wrk``: ``POST
/v1/models/resnet50:predict`` with ``{"instances": [<3x224x224 floats>]}`` (about 1.6 MB of JSON, as
TF Serving's REST load tests send), and the same image as a KServe v2 binary tensor (602 KB raw,
``Inference-Header-Content-Length``), interleaved per connection count on one server. Both reach
the same door, batcher and replica: the difference is the codec's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.run import ROOT, start_serving

sys.path.insert(0, str(ROOT / "examples"))

_WRK = re.compile(r"RESULT qps=(\S+) p50_ms=(\S+) p99_ms=(\S+) errors=(\d+) requests=(\d+)")
_DONE = """
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format("RESULT qps=%.2f p50_ms=%.2f p99_ms=%.2f errors=%d requests=%d\\n",
    s.requests / (s.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, s.requests))
end
"""


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)


def scripts(folder: Path) -> dict[str, tuple[Path, str]]:
    """wrk scripts: (script, path) for TF Serving REST JSON and for v2 binary."""
    image = _image()
    (folder / "tf.json").write_text(json.dumps({"instances": image.tolist()}))
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                     "parameters": {"binary_data_size": image.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    (folder / "v2.bin").write_bytes(header + image.tobytes())
    out = {}
    for name, body, headers in (("tf_rest_json", "tf.json", 'wrk.headers["Content-Type"] = "application/json"'),
                                ("v2_binary", "v2.bin", f'wrk.headers["Inference-Header-Content-Length"] = '
                                                        f'"{len(header)}"')):
        script = folder / f"{name}.lua"
        script.write_text(f'wrk.method = "POST"\n{headers}\nlocal f = io.open("{folder / body}", "rb")\n'
                          f'wrk.body = f:read("*all")\nf:close()\n{_DONE}')
        out[name] = (script, "/v1/models/resnet50:predict" if name == "tf_rest_json" else "/v2/models/resnet50/infer")
    return out


def run(base: str, script: Path, path: str, conns: int, seconds: int) -> dict:
    done = subprocess.run(["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s",
                           "-s", str(script), f"{base}{path}"], capture_output=True, text=True, check=True)
    qps, p50, p99, errors, requests = _WRK.search(done.stdout).groups()
    return {"qps": float(qps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors),
            "requests": int(requests)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--conns", default="1,16,64")
    parser.add_argument("--port", type=int, default=8131)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    from build_repository import build_repository

    folder = Path(tempfile.mkdtemp(prefix="tf-predict-"))
    build_repository(folder / "repo", only=("resnet50",))
    base = start_serving(folder / "repo", args.port)
    rows = []
    for conns in (int(c) for c in args.conns.split(",")):
        for name, (script, path) in scripts(folder).items():
            row = {"protocol": name, "concurrency": conns, **run(base, script, path, conns, args.seconds)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    write(args.out, rows, " ".join(["python -m bench.tfserving_predict", *sys.argv[1:]]))
    return 0


def write(out: Path, rows: list[dict], command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg(),
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (out / "tfserving_predict.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows},
                                                           indent=2))
    lines = ["# ResNet-50: TF Serving REST `:predict` (one JSON image) beside KServe v2 binary, one server", "",
             f"Command: `{command}`  ", f"Machine: {machine['cores']} cores, CPU only, {machine['date_utc']}", "",
             "| protocol | connections | QPS | p50 ms | p99 ms | errors | requests |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['concurrency']} | {r['qps']:.2f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {r['requests']} |")
    by = {(r["protocol"], r["concurrency"]): r for r in rows}
    ratios = [f"{c}: {by[('tf_rest_json', c)]['qps'] / by[('v2_binary', c)]['qps']:.2f}x"
              for (p, c) in by if p == "v2_binary" and by[(p, c)]["qps"] and ("tf_rest_json", c) in by]
    lines += ["", f"TF REST JSON / v2 binary QPS, per connection count: {', '.join(ratios)}."]
    (out / "tfserving_predict.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
