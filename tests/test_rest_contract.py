"""The REST API against its OpenAPI document: schemathesis generates requests from the
document and checks every answer (no 5xx, documented status and content type, body matching
its schema). The service runs as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from notifier.transport.openapi import OPERATIONS, document
from tests.conftest import ADMIN, SECRET, make_settings, start_server, stop_server
from tests.service_process import free_port

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(
        NOTIFIER_PORT=str(port),
        NOTIFIER_JWT_SECRET=SECRET,
        NOTIFIER_LOG_LEVEL="ERROR",
        NOTIFIER_DATA_DIR=str(tmp_path_factory.mktemp("contract")),
    )
    process = subprocess.Popen([sys.executable, "-m", "notifier", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


# The document as the service builds it; the test below checks that it serves this one.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_every_answer_matches_the_document(case: schemathesis.Case, service_url: str) -> None:
    response = case.call(base_url=service_url, headers=ADMIN, timeout=10)
    case.validate_response(response, checks=CHECKS)


def test_the_service_serves_the_document(service_url: str) -> None:
    response = requests.get(service_url + "/api/v1/openapi.json", timeout=5)
    assert response.status_code == 200 and response.json() == document()
    assert response.json()["openapi"] == "3.1.0"


async def test_every_route_is_in_the_document(tmp_path: Path) -> None:
    running, runner = await start_server(make_settings(tmp_path))
    try:
        served = {
            (route.method.lower(), route.resource.canonical)
            for route in running.app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    finally:
        await stop_server(running, runner)
    undocumented = {"/socket.io/", "/", "/static/{name}", "/metrics", "/api/v1/openapi.json"}
    served = {(method, path) for method, path in served if path not in undocumented}
    assert served == {(op.method, op.path) for op in OPERATIONS}
