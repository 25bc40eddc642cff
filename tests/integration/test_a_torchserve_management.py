"""TorchServe's management API under load: ``infergrid serve --ts-config config.properties --model-store DIR``
with TorchServe's own config shape (its three addresses, token auth, the model API on), then register a
second version, scale the workers (replicas counted by Ray's dashboard), move the default and unregister
the first, while clients send unversioned predictions throughout: none fails.

Named to run before the session's shared cluster starts (its own embedded Ray, as a user's server).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port
from test_a_cli import start_server

pytestmark = pytest.mark.integration


class Load:
    """Clients sending unversioned predictions until stopped: every status and answer kept."""

    def __init__(self, url: str, key: str, clients: int = 2) -> None:
        self._url, self._headers = url, {"Authorization": f"Bearer {key}"}
        self._stop = threading.Event()
        self.answers: list[tuple[int, str]] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    reply = session.post(self._url, data=b"x", headers=self._headers, timeout=60)
                    self.answers.append((reply.status_code, reply.text))
                except requests.RequestException as exc:
                    self.answers.append((0, str(exc)))

    def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
        return self.answers


def _ray_replicas(dashboard: str, model: str) -> dict[str, int]:
    """Running replicas of each version application of ``model``, as Ray's dashboard counts them."""
    token = Path.home() / ".ray" / "auth_token"  # Ray's own token auth guards its dashboard, when on
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}
    reply = requests.get(f"{dashboard}/api/serve/applications/", headers=headers, timeout=30)
    assert reply.ok and reply.text.startswith("{"), (reply.status_code, reply.text[:500], dashboard)
    applications = reply.json()["applications"]
    return {name: sum(1 for deployment in app["deployments"].values() for replica in deployment["replicas"]
                      if replica["state"] == "RUNNING")
            for name, app in applications.items() if name.startswith(f"{model}:v")}


def _wait(condition, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_a_management_api_registers_scales_swaps_and_unregisters_under_load(
        ts_versioned_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERGRID_MAR_CACHE", str(tmp_path / "unpacked"))
    port, inference_port, management_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "config.properties"  # TorchServe's documented shape
    config.write_text(f"inference_address=http://127.0.0.1:{inference_port}\n"
                      f"management_address=http://127.0.0.1:{management_port}\n"
                      f"metrics_address=http://127.0.0.1:{metrics_port}\n"
                      "load_models=swap-1.mar\nenable_model_api=true\nenable_token_auth=true\n"
                      "default_workers_per_model=1\nnumber_of_netty_threads=4\n")
    log = tmp_path / "serve.log"
    process = start_server([], port, log, "--ts-config", str(config), "--model-store", str(ts_versioned_store),
                           cwd=tmp_path)
    try:
        assert "not honoured by infergrid: number_of_netty_threads" in log.read_text()
        keys = json.loads((tmp_path / "key_file.json").read_text())  # TorchServe's key file, where it writes it
        inference, management = keys["inference"]["key"], keys["management"]["key"]
        ts, admin = f"http://127.0.0.1:{inference_port}", f"http://127.0.0.1:{management_port}"
        as_admin = {"Authorization": f"Bearer {management}"}
        dashboard = next(line.split()[-1] for line in log.read_text().splitlines() if "Ray dashboard" in line)
        # Token auth as TorchServe's: no key 401, the inference key cannot manage.
        assert requests.post(f"{ts}/predictions/swap", data=b"x", timeout=30).status_code == 401
        refused = requests.get(f"{admin}/models", headers={"Authorization": f"Bearer {inference}"}, timeout=30)
        assert refused.status_code == 403 and refused.json()["type"] == "InvalidKeyException"
        assert requests.get(f"{admin}/models", headers=as_admin, timeout=30).json() == {
            "models": [{"modelName": "swap", "modelUrl": "swap-1.mar"}]}
        assert requests.request("OPTIONS", f"{admin}/", headers=as_admin, timeout=30).json()["openapi"] == "3.0.1"

        load = Load(f"{ts}/predictions/swap", inference)
        _wait(lambda: len(load.answers) > 20, "the load never got answers")
        # Register version 2.0 (TorchServe's default: asynchronously), then once more: a conflict.
        registered = requests.post(f"{admin}/models?url=swap-2.mar&initial_workers=1", headers=as_admin, timeout=120)
        assert registered.status_code == 202, registered.text
        describe = lambda: requests.get(f"{admin}/models/swap/all", headers=as_admin, timeout=30).json()  # noqa: E731
        _wait(lambda: all(len(v["workers"]) == 1 for v in describe()) and len(describe()) == 2, "2.0 never served")
        again = requests.post(f"{admin}/models?url=swap-2.mar&synchronous=true", headers=as_admin, timeout=120)
        assert again.status_code == 409 and again.json()["type"] == "ConflictStatusException", again.text
        auth = {"Authorization": f"Bearer {inference}"}
        pinned = requests.post(f"{ts}/predictions/swap/2.0", data=b"x", headers=auth, timeout=30)
        assert (pinned.text, pinned.headers["X-Model-Version"]) == ("version 2.0", "2")  # who answered
        assert requests.post(f"{ts}/predictions/swap", data=b"x", headers=auth, timeout=30).text == "version 1.0"
        # Scale: two workers of each version, counted by Ray.
        scaled = requests.put(f"{admin}/models/swap?min_worker=2&max_worker=3&synchronous=true", headers=as_admin,
                              timeout=180)
        assert scaled.status_code == 200 and "scaled to 2" in scaled.text, scaled.text
        _wait(lambda: sorted(_ray_replicas(dashboard, "swap").values()) == [2, 2], "Ray never ran 2 replicas each")
        assert {v["maxWorkers"] for v in describe()} == {3}
        # The default moves to 2.0: unversioned requests follow within a second or so.
        moved = requests.put(f"{admin}/models/swap/2.0/set-default", headers=as_admin, timeout=60)
        assert moved.status_code == 200, moved.text
        _wait(lambda: load.answers[-1][1] == "version 2.0", "unversioned requests never reached 2.0", 30)
        kept = requests.delete(f"{admin}/models/swap/2.0", headers=as_admin, timeout=60)
        assert kept.status_code == 400 and "default version" in kept.json()["message"], kept.text
        gone = requests.delete(f"{admin}/models/swap/1.0", headers=as_admin, timeout=120)
        assert gone.status_code == 200 and gone.json() == {"status": 'Model "swap" unregistered'}, gone.text
        [only] = describe()
        assert (only["modelVersion"], only["isDefault"], only["modelUrl"]) == ("2.0", True, "swap-2.mar")
        time.sleep(1.0)  # requests keep flowing after the version went
        answers = load.stop()
        failed = [a for a in answers if a[0] != 200]
        assert not failed, failed[:5]
        assert {"version 1.0", "version 2.0"} <= {text for _, text in answers}, len(answers)
        assert requests.post(f"{ts}/predictions/swap/1.0", data=b"x", headers=auth, timeout=30).status_code == 404
        _wait(lambda: list(_ray_replicas(dashboard, "swap").values()) == [2], "version 1's replicas stayed")
        missing = requests.post(f"{admin}/models?url=nothing.mar", headers=as_admin, timeout=30)
        assert missing.status_code == 404 and missing.json()["type"] == "ModelNotFoundException", missing.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
