"""`python -m pipelines.schedule`: the recurring run kfp's real Client sends, to a stand-in for the KFP API server.

No Kubeflow is reachable here, so a small HTTP server answers the v2beta1 endpoints the command uses and records what
arrives: the cron in KFP's six-field form, no catch-up, at most one run at a time, and a same-named run replaced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.schedule import kfp_cron, main, parse_params


class FakeKfp:
    """Records requests; lists `existing` as the experiment's recurring runs."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.existing: list[dict[str, str]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, None))
                listing = urlsplit(self.path).path.endswith("/recurringruns")
                self._reply({"recurringRuns": fake.existing} if listing else {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(("POST", self.path, body))
                self._reply({"experiment_id": "exp-1", **body} if self.path.endswith("/experiments") else {**body, "recurring_run_id": "new-1"})

            def do_DELETE(self) -> None:
                fake.requests.append(("DELETE", self.path, None))
                self._reply({})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def kfp_api() -> Iterator[tuple[FakeKfp, str]]:
    fake = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def created(fake: FakeKfp) -> dict[str, Any]:
    (body,) = [body for method, path, body in fake.requests if method == "POST" and path.endswith("/recurringruns")]
    return body


@pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's note that it needs KFP >= 2.0.0-beta.2
def test_schedule_creates_a_recurring_run_in_kfps_cron_form_without_catchup(kfp_api, capsys) -> None:
    fake, host = kfp_api
    assert main(["--host", host, "--cron", "0 3 * * *", "--param", "raw_uri=s3://raw/hdtf", "--param", 'overrides=["hist.bins=9"]',
                 "--param", "force=false"]) == 0
    body = created(fake)
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["no_catchup"] is True and body["max_concurrency"] == 1 and body["mode"] == "ENABLE"
    assert body["display_name"] == "julnet-retrain-nightly" and body["service_account"] == "julnet-pipeline" and body["experiment_id"] == "exp-1"
    assert body["runtime_config"]["parameters"] == {"raw_uri": "s3://raw/hdtf", "overrides": ["hist.bins=9"], "force": False}
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "julnet-retrain"
    assert all(task.get("cachingOptions") == {} for task in spec["root"]["dag"]["tasks"].values()), "caching stays off"
    assert not [r for r in fake.requests if r[0] == "DELETE"]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["cron"] == "0 0 3 * * *"


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_schedule_replaces_a_recurring_run_of_the_same_name(kfp_api) -> None:
    fake, host = kfp_api
    fake.existing = [{"recurring_run_id": "old-7", "display_name": "julnet-nightly"}, {"recurring_run_id": "other", "display_name": "else"}]
    assert main(["--host", host, "--name", "julnet-nightly", "--cron", "30 0 2 * * 1-5", "--service-account", ""]) == 0
    assert [path for method, path, _ in fake.requests if method == "DELETE"] == ["/apis/v2beta1/recurringruns/old-7"]
    listing = [path for method, path, _ in fake.requests if method == "GET" and "/recurringruns" in path][0]
    assert parse_qs(urlsplit(listing).query)["experiment_id"] == ["exp-1"]
    body = created(fake)
    assert body["trigger"]["cron_schedule"]["cron"] == "30 0 2 * * 1-5" and "service_account" not in body


def test_cron_and_params_are_checked_before_anything_is_sent(capsys) -> None:
    assert kfp_cron("*/15 * * * *") == "0 */15 * * * *" and kfp_cron("0 0 3 ? * MON-FRI") == "0 0 3 ? * MON-FRI"
    for bad in ("0 3 * *", "0 3 * * * * *", "0 3 * * ;rm"):
        with pytest.raises(ValueError, match="expected 5 fields"):
            kfp_cron(bad)
    assert parse_params(["a=1", "b=s3://x", "c=[1, 2]", "d="]) == {"a": 1, "b": "s3://x", "c": [1, 2], "d": ""}
    assert main(["--cron", "3 * *", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "schedule: error: cron '3 * *': expected 5 fields (minute hour day month weekday) or 6 (seconds first)"
    assert main(["--cron", "0 3 * * *", "--param", "nokey", "--dry-run"]) == 2
    assert main(["--cron", "0 3 * * *", "--param", "raw_uri=s3://raw/x", "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cron_expression"] == "0 0 3 * * *" and shown["no_catchup"] is True and shown["max_concurrency"] == 1
