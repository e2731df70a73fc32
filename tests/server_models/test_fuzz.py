"""Property-based fuzzing of every server model's endpoints: bad input is 4xx JSON, never 5xx.

Hypothesis generates query strings (percent-encoded junk, unicode, huge values, repeated and
unknown parameters, empty), paths under the known endpoints and odd methods, and sends each as
a real request to a real server on loopback. ``servers.endpoints`` is the oracle for requests
to an exact endpoint path: the answer must be the 200 it accepts or the 400 it raises.
Requests whose head exceeds the frameworks' own limits (gunicorn: 4094-byte request line;
Tornado: 64 KB) are covered separately: those are refused before our code runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import string
import time
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from servers import MODELS
from servers.endpoints import (
    BadRequest,
    delay_body,
    error_body,
    expected_body,
    parse_delay,
    parse_no_params,
)

pytestmark = pytest.mark.slow  # real server processes

EXAMPLES = 150  # per model
TIMEOUT_S = 10.0  # per request: generous on a shared 2-core machine, far below a real hang
MAX_QUERY = 3500  # keeps the request line under gunicorn's 4094-byte limit
SLOW_MS = 100  # a generated query that is valid and asks for more is skipped (it is not junk)
ENDPOINTS = ("/sleep", "/fetch", "/sql", "/hello", "/health")
ODD_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "FOO",
               "M-SEARCH", "PROPFIND")  # fmt: skip
URL_CHARS = "".join(c for c in string.printable if c not in string.whitespace + "#")

# Query strings ------------------------------------------------------------------------------

keys = st.one_of(
    st.sampled_from(["ms", "MS", "ms ", " ms", "ms[]", "url", "host", "upstream", "target", ""]),
    st.text(max_size=20),
)
values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.integers(0, 10**40).map(str),
    st.sampled_from(["", "1e3", "0x10", "1.5", "+5", "-0", " 5", "5 ", "٣", "１０", "NaN", "007",
                     "http://evil.example/", "127.0.0.1:1", "1;2", "1'; DROP TABLE x; --"]),
    st.text(max_size=30),  # unicode, sent percent-encoded as UTF-8
    st.text(alphabet="0123456789", min_size=7, max_size=3000),  # huge numbers
)  # fmt: skip
pairs = st.lists(st.tuples(keys, values, st.sampled_from(["=", "", "=="])), max_size=12)
structured = st.builds(
    lambda items, sep: sep.join(quote(k, safe="") + eq + quote(v, safe="") for k, v, eq in items),
    pairs,
    st.sampled_from(["&", ";", "&&"]),
)
percent_junk = st.binary(max_size=60).map(lambda b: quote_from_bytes(b, safe=""))  # %ff, %00...
raw_junk = st.text(alphabet=URL_CHARS, max_size=300)  # stray %, =, &, ?, / as typed
queries = st.one_of(
    st.just(""),
    st.integers(0, SLOW_MS).map(lambda ms: f"ms={ms}"),  # valid: the work is really done
    structured,
    percent_junk,
    st.builds(lambda junk: "ms=" + junk, percent_junk | raw_junk),
    raw_junk,
    st.builds(lambda a, b: f"{a}&{b}", structured, raw_junk),
).map(lambda q: q[:MAX_QUERY])

# Paths and methods ------------------------------------------------------------------------

suffixes = st.one_of(
    st.just(""),  # about half the paths are exact endpoints, where the oracle applies
    st.just(""),
    st.just(""),
    st.sampled_from(["/", "//", "/..", "/../hello", "%2F", ".json", "/x", "%00", "%20", "/%2e%2e"]),
    st.text(max_size=20).map(lambda t: "/" + quote(t, safe="/")),
)
prefixes = st.sampled_from(["", "", "", "", "", "/", "/%2e"])
paths = st.builds(
    lambda pre, endpoint, suf: pre + endpoint + suf, prefixes, st.sampled_from(ENDPOINTS), suffixes
)
methods = st.one_of(st.just("GET"), st.just("GET"), st.sampled_from(ODD_METHODS))




def request(url: str, method: str, target: str) -> tuple[int, bytes]:
    """One request on its own connection; a read that takes longer than TIMEOUT_S fails."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def oracle(endpoint: str, query: str) -> tuple[int, bytes | None]:
    """What the contract says ``GET endpoint?query`` answers (None: any one-line JSON error)."""
    try:
        if endpoint in ("/hello", "/health"):
            parse_no_params(query)
            return 200, expected_body("hello", None) if endpoint == "/hello" else None
        return 200, delay_body(endpoint[1:], parse_delay(query))
    except BadRequest as exc:
        return 400, error_body(str(exc))


def slow(query: str) -> bool:
    """A valid ``ms`` above SLOW_MS: a legitimate slow request, not an input to fuzz with."""
    try:
        return parse_delay(query) > SLOW_MS
    except BadRequest:
        return False


def assert_json_line(body: bytes, key: str) -> None:
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body[:200]
    assert key in json.loads(body), body[:200]


def check(model: str, method: str, path: str, query: str, status: int, body: bytes) -> None:
    where = f"{model}: {method} {path}?{query[:200]} -> {status} {body[:200]!r}"
    assert status < 500, where
    if method == "GET" and path in ENDPOINTS:
        expected_status, expected = oracle(path, query)
        assert status == expected_status, where
        if expected is not None:
            assert body == expected, where
    if status >= 400 and method != "HEAD":
        assert_json_line(body, "error")
    elif status == 200 and method == "GET":
        json.loads(body)


@pytest.mark.parametrize("model", list(MODELS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(method=methods, path=paths, query=queries)
def test_fuzzed_requests_never_5xx_nor_hang(servers, model, method, path, query) -> None:
    if slow(query):
        return  # a valid long delay, not junk; never sent
    status, body = request(servers[model].url, method, f"{path}?{query}" if query else path)
    event(f"{'exact' if path in ENDPOINTS else 'other'} path, {method}, {status}")
    check(model, method, path, query, status, body)


@pytest.mark.parametrize("model", list(MODELS))
@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(query=queries, endpoint=st.sampled_from(ENDPOINTS[:3]))
def test_fuzzed_delay_queries_match_the_contract_exactly(servers, model, query, endpoint) -> None:
    """GET on an exact scenario endpoint: the status and bytes ``servers.endpoints`` predicts."""
    if slow(query):
        return
    status, body = request(servers[model].url, "GET", f"{endpoint}?{query}")
    event(f"{status}")
    assert (status, body) == oracle(endpoint, query), (model, endpoint, query[:200])


MALFORMED_HEADS = {
    "request line over gunicorn's limit": f"GET /sleep?ms={'1' * 5000} HTTP/1.1\r\nHost: x",
    "head over Tornado's limit": f"GET /sleep?ms={'1' * 70_000} HTTP/1.1\r\nHost: x",
    "raw UTF-8 in the target": "GET /sleep?ms=\u00e9\u4e2d HTTP/1.1\r\nHost: x",
    "control character in the target": "GET /sleep?ms=\x01 HTTP/1.1\r\nHost: x",
    "space in the target": "GET /sleep?ms=1 2 HTTP/1.1\r\nHost: x",
    "lowercase method": "get /sleep?ms=1 HTTP/1.1\r\nHost: x",
    "unknown version": "GET /sleep?ms=1 HTTP/9.9\r\nHost: x",
    "garbage": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
    "header without colon": "GET /sleep?ms=1 HTTP/1.1\r\nHost: x\r\nnocolon",
    "body with conflicting lengths": "POST /sleep?ms=1 HTTP/1.1\r\nHost: x\r\n"
    "Content-Length: 1\r\nContent-Length: 2",
}


@pytest.mark.parametrize("head", list(MALFORMED_HEADS.values()), ids=list(MALFORMED_HEADS))
@pytest.mark.parametrize("model", list(MODELS))
def test_malformed_request_head_is_refused_not_5xx(servers, model: str, head: str) -> None:
    """Refused by the HTTP layer before our code: a 4xx or a closed connection, promptly."""
    host, port = servers[model].url.removeprefix("http://").split(":")
    data = (head + "\r\nConnection: close\r\n\r\n").encode("utf-8")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert time.perf_counter() - start < TIMEOUT_S
    status_line = answer.split(b"\r\n", 1)[0]
    assert not answer or status_line.split(b" ")[1][:1] == b"4", status_line


@pytest.mark.parametrize("model", list(MODELS))
def test_still_serves_after_fuzzing(servers, model: str) -> None:
    """Runs after the fuzz tests (file order): nothing above broke or wedged a worker."""
    running = servers[model]
    assert running.process.alive()
    expected_processes = 3 if MODELS[model].multi_process else 1
    assert len(running.process.tree()) == expected_processes
    for _ in range(expected_processes * 2):  # reach every worker, most likely
        start = time.perf_counter()
        assert request(running.url, "GET", "/sleep?ms=10") == (200, delay_body("sleep", 10))
        assert time.perf_counter() - start >= 0.010
