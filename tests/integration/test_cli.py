"""``infergrid serve`` as a user runs it: its own embedded Ray, endpoints printed, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

pytestmark = pytest.mark.integration


def test_serve_command_serves_and_stops_cleanly(example_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # The session's cluster already runs an HAProxy: this second one needs its own side ports.
    env.update(RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()), RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "serve", "--repository", str(example_repository),
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "READY" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/v2/models/fraud/infer" in text
        assert "Ray dashboard    http" in text
        body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
        response = requests.post(f"http://127.0.0.1:{port}/v2/models/fraud/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
