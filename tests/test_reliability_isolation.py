"""Failure isolation (issue 15): one request's failure ends that request alone; a broken engine
makes its server stop claiming readiness at once, and the supervisor restarts it.

A supervised server of its own (`python -m serving serve`) built with the test-only fault
injection `WINGPT_TEST_FAULTS` (wingpt/engine/faults.py): a request with random_seed 4242 fails in
its engine step, one with 4343 breaks the engine. Driven through the product's client, so the tests
do not depend on how the `ensemble` model is built. The tests run in file order; the last one
leaves the server restarted.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from reliability_servers import OwnServer, start_own_server, wait_until
from wingpt_client import InvalidRequestError, OverloadedError, UnavailableError, WingptClient, WingptClientError

pytestmark = pytest.mark.server

QUESTION = "孩子发烧39度，精神不好，需要马上去医院吗？"
REQUEST_FAULT_SEED, ENGINE_FAULT_SEED = 4242, 4343


@pytest.fixture(scope="module")
def server() -> Iterator[OwnServer]:
    own = start_own_server("isolation", WINGPT_TEST_FAULTS=f"request:{REQUEST_FAULT_SEED},engine:{ENGINE_FAULT_SEED}")
    yield own
    own.stop()


def ready_status(server: OwnServer) -> int | str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.settings.http_port}/v2/health/ready", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return "closed"


def test_a_request_whose_step_fails_ends_alone_while_a_concurrent_one_completes(server):
    with WingptClient(server.grpc_url, retries=0) as c:
        running = c.stream_chat(QUESTION, max_tokens=48, temperature=0)
        deltas = [next(running)]  # generating when the faulty request joins its batch
        with pytest.raises(WingptClientError) as failed:
            c.chat(QUESTION, max_tokens=8, seed=REQUEST_FAULT_SEED)
        deltas.extend(running)  # no error: the answer ends normally
        assert failed.value.code == "INTERNAL" and "injected request fault" in failed.value.message
        assert not isinstance(failed.value, (InvalidRequestError, OverloadedError, UnavailableError))
        assert "".join(deltas)
        assert c.chat(QUESTION, max_tokens=4), "and the engine serves the next request"
    assert ready_status(server) == 200


def test_failures_of_many_requests_in_a_row_do_not_break_the_engine(server):
    errors: list[BaseException] = []
    answers: list[str] = []

    def faulty() -> None:
        with WingptClient(server.grpc_url, retries=0) as c:
            for _ in range(3):
                with pytest.raises(WingptClientError) as failed:
                    c.chat(QUESTION, max_tokens=4, seed=REQUEST_FAULT_SEED)
                errors.append(failed.value)

    def ordinary() -> None:
        with WingptClient(server.grpc_url, retries=0) as c:
            answers.extend(c.chat(f"{QUESTION} {i}", max_tokens=8) for i in range(3))

    threads = [threading.Thread(target=faulty), threading.Thread(target=ordinary)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3 and all(e.code == "INTERNAL" for e in errors), errors
    assert len(answers) == 3 and all(answers), answers
    with WingptClient(server.grpc_url, retries=0) as c:
        assert c.chat(QUESTION, max_tokens=4)


def test_a_broken_engine_stops_claiming_readiness_and_the_supervisor_restarts_the_server(server):
    server_pid = server.server_pid()
    assert ready_status(server) == 200
    with WingptClient(server.grpc_url, retries=0) as c, pytest.raises(WingptClientError) as failed:
        c.chat(QUESTION, max_tokens=8, seed=ENGINE_FAULT_SEED)
    assert "injected engine fault" in failed.value.message
    assert wait_until(lambda: ready_status(server) != 200, 30), "readiness must stop at once, not stay 200"
    assert wait_until(lambda: server.server_pid() not in (None, server_pid), 60), "supervisor restarted tritonserver"
    server.wait_ready()
    with WingptClient(server.grpc_url, retries=5) as c:
        assert c.chat(QUESTION, max_tokens=4)
        assert "".join(c.stream_chat(QUESTION, max_tokens=4))
    log = server.log_text()
    assert "the engine is broken" in log
    assert any(line.startswith("supervisor:") and "restarting tritonserver" in line for line in log.splitlines())
