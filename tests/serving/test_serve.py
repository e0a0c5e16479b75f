"""``mlpipe serve`` over real HTTP: a real server process on 127.0.0.1 against a real pipeline run."""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.package import predict_onnx
from mlpipe.store.models import describe, get_version, load_model
from mlpipe.store.workspace import Workspace
from tests.conftest import mlpipe
from tests.servers import add_version, copy_workspace, free_port, records, serve, tampered_copy, wait_until

HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")


@pytest.fixture(scope="module")
def champion(run_workspace) -> str:
    return run_workspace[1]["champion"]["name"]


@pytest.fixture(scope="module")
def server(run_workspace, champion, tmp_path_factory):
    with serve(run_workspace[0], f"{champion}@champion", "--max-body-mb", "1",
               log_dir=tmp_path_factory.mktemp("serve")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def info(client) -> dict:
    return client.get("/metadata").json()


@pytest.fixture(scope="module")
def test_set(run_workspace):
    return Workspace(run_workspace[0]).datasets.load("turku-test")


def answers(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return (np.array([p["label"] for p in predictions]), np.array([p["probability"] for p in predictions]))


def test_posting_the_test_set_reproduces_the_registered_test_metrics(client, info, test_set):
    response = client.post("/predict", json=records(test_set, info["features"]))
    labels, proba = answers(response)
    assert response.json()["model"] == {"name": info["name"], "version": info["version"]}
    assert len(labels) == len(test_set)
    metrics = classification_metrics(test_set["label"].to_numpy(), labels, proba)
    for key in HEADLINE:
        # label metrics exactly; ROC AUC ranks probabilities, which onnxruntime sums in a thread-count-dependent
        # order (the server may use more threads than the pipeline): near-ties may swap, and CSV text rounds them: so 1e-3
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-3 if key == "roc_auc" else 1e-9), key


def test_one_record_gets_the_answer_it_gets_inside_a_list(client, info, test_set):
    batch = records(test_set.head(12), info["features"])
    batch[3][info["features"][0]] = None  # a missing value: the graph imputes it
    together = client.post("/predict", json=batch).json()["predictions"]
    alone = [client.post("/predict", json=record).json()["predictions"] for record in batch]
    assert all(len(a) == 1 for a in alone)
    assert [a[0] for a in alone] == together
    assert {p["label"] for p in together} <= {0, 1}
    assert all(0.0 <= p["probability"] <= 1.0 for p in together)


def test_an_empty_list_gets_no_predictions(client, info):
    response = client.post("/predict", json=[])
    assert response.status_code == 200
    assert response.json() == {"model": {"name": info["name"], "version": info["version"]}, "predictions": []}


@pytest.mark.parametrize("change, field", [
    (lambda r, f: r.pop(f[0]), 0),
    (lambda r, f: r.update(wind_gust_kmph=3.0), "wind_gust_kmph"),
    (lambda r, f: r.update({f[1]: "0.93"}), 1),
    (lambda r, f: r.update({f[2]: True}), 2),
    (lambda r, f: r.update({f[3]: [1.0]}), 3),
    (lambda r, f: r.update({f[4]: 1e39}), 4),
], ids=["missing", "extra", "string", "boolean", "list", "beyond-float32"])
@pytest.mark.parametrize("as_list", [False, True], ids=["record", "list"])
def test_a_bad_record_gets_422_naming_the_field(client, info, test_set, change, field, as_list):
    features = info["features"]
    name = features[field] if isinstance(field, int) else field
    batch = records(test_set.head(3), features)
    change(batch[2], features)
    response = client.post("/predict", json=batch if as_list else batch[2])
    assert response.status_code == 422
    locations = [e["loc"] for e in response.json()["detail"]]
    assert any(loc[-1] == name for loc in locations), locations
    if as_list:
        assert all(loc[:3] == ["body", "records", 2] for loc in locations), locations


@pytest.mark.parametrize("body, status", [
    (b'{"Humidity": 0.5', 422), (b"42", 422), (b'"text"', 422), (b"null", 422), (b"[1, 2]", 422), (b"\x80abc", 400),
], ids=["truncated", "number", "string", "null", "list-of-numbers", "not-text"])
def test_a_body_that_is_no_record_gets_4xx(client, body, status):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text


def test_an_oversized_body_gets_413(client):
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"  # the server was started with --max-body-mb 1
    response = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    chunked = client.post("/predict", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                          headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_metadata_is_the_models_show_object(client, run_workspace, champion):
    shown = describe(get_version(Workspace(run_workspace[0]), f"{champion}@champion"))
    assert client.get("/metadata").json() == json.loads(json.dumps(shown, default=str))  # as `models show --json`


def test_health_names_the_model(client, champion):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["model"]["name"] == champion


def test_docs_show_the_model_features(client, info):
    schema = client.get("/openapi.json").json()
    record = schema["components"]["schemas"]["Record"]
    assert list(record["properties"]) == info["features"]
    assert record["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                words = (int(address[i:i + 8], 16) for i in range(0, len(address), 8))  # 32-bit, host order
                found.add(str(ipaddress.ip_address(b"".join(w.to_bytes(4, sys.byteorder) for w in words))))
    return found


def test_binds_to_loopback_by_default(server):
    assert f"Uvicorn running on {server.url}" in server.log_text()
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the listening sockets from")
    assert _listening_addresses(int(server.url.rsplit(":", 1)[1])) == {"127.0.0.1"}  # not 0.0.0.0, not ::


def test_schemathesis_finds_no_server_error(server):
    """Generated requests, valid and invalid, against the live server's own OpenAPI schema."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    calls: Counter = Counter()
    for mode, examples in ((GenerationMode.POSITIVE, 200), (GenerationMode.NEGATIVE, 100)):
        for path, method in (("/predict", "POST"), ("/health", "GET"), ("/metadata", "GET"),
                             ("/observations", "POST"), ("/forecast", "GET")):
            operation = schema[path][method]

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=server.url)
                calls[f"{method} {path}"] += 1
                assert response.status_code < 500, (case.body, response.text)
                # A schema-valid observation may still be refused for what no schema says: a time past the
                # clock skew, a day that does not exist ("2013-02-30"), a group name with control characters.
                semantic = [positive_data_acceptance] if path in ("/observations", "/forecast") else []
                case.validate_response(response, excluded_checks=semantic)

            if mode is GenerationMode.POSITIVE or path in ("/predict", "/observations"):
                check()
    assert calls["POST /predict"] >= 300 and calls["POST /observations"] >= 300 and calls["GET /forecast"] >= 200


@pytest.fixture(scope="module")
def token_server(run_workspace, champion, tmp_path_factory):
    with serve(run_workspace[0], f"{champion}@champion", env={"MLPIPE_SERVE_TOKEN": "s3cret-token"},
               log_dir=tmp_path_factory.mktemp("serve-token")) as s:
        yield s


@pytest.mark.parametrize("method, path", [("POST", "/predict"), ("GET", "/metadata"), ("GET", "/openapi.json"),
                                          ("GET", "/docs")])
def test_with_a_token_every_route_but_health_needs_it(token_server, info, test_set, method, path):
    body = records(test_set.head(1), info["features"])[0] if method == "POST" else None
    call = lambda headers: httpx.request(method, token_server.url + path, json=body, headers=headers)  # noqa: E731
    assert call({}).status_code == 401
    assert call({"Authorization": "Bearer wrong"}).status_code == 401
    assert call({"Authorization": "s3cret-token"}).status_code == 401
    assert call({"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert httpx.get(token_server.url + "/health").status_code == 200


def test_a_tampered_model_refuses_to_start(run_workspace, champion, tmp_path):
    ws = Workspace(copy_workspace(run_workspace[0], tmp_path / "ws"))
    good = get_version(ws, f"{champion}@champion")
    version = add_version(ws, champion, good, source=str(tampered_copy(load_model(ws, champion).onnx, tmp_path / "t")))
    proc = mlpipe("serve", "--model", f"{champion}:{version}", "--port", str(free_port()), workspace=ws.root,
                  timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")
    assert "SHA-256" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unknown_model_exits_2(run_workspace):
    proc = mlpipe("serve", "--model", "no-such-model@champion", "--port", str(free_port()),
                  workspace=run_workspace[0], timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: model 'no-such-model@champion' does not exist"


def test_the_server_follows_its_alias_without_dropping_requests(run_workspace, champion, test_set, tmp_path):
    ws = Workspace(copy_workspace(run_workspace[0], tmp_path / "ws"))
    first = get_version(ws, f"{champion}@champion")
    other = next(m["name"] for m in run_workspace[1]["models"]
                 if m["name"] != champion and m["kind"] != "baseline")
    features = load_model(ws, champion).features
    with serve(ws.root, f"{champion}@champion", "--poll-seconds", "0.3", log_dir=tmp_path) as server:
        version_now = lambda: httpx.get(f"{server.url}/metadata").json()["version"]  # noqa: E731

        # A tampered version is refused: the server keeps answering with the one it has.
        tampered = add_version(ws, champion, first, source=str(tampered_copy(load_model(ws, champion).onnx,
                                                                              tmp_path / "t")))
        ws.client.set_registered_model_alias(champion, "champion", str(tampered))
        assert wait_until(lambda: "SHA-256" in server.log_text(), 30), server.log_text()
        assert version_now() == int(first.version)

        # A good version is swapped in while requests keep coming.
        seen, stop = [], threading.Event()

        def hammer():
            with httpx.Client(base_url=server.url, timeout=30) as c:
                record = records(test_set.head(1), features)[0]
                while not stop.is_set():
                    r = c.post("/predict", json=record)
                    seen.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else None))

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            wait_until(lambda: len(seen) > 20, 30)
            new = add_version(ws, champion, get_version(ws, f"{other}:1"))
            ws.client.set_registered_model_alias(champion, "champion", str(new))
            assert wait_until(lambda: version_now() == new, 30), server.log_text()
            count = len(seen)
            wait_until(lambda: len(seen) > count + 20, 30)
        finally:
            stop.set()
            thread.join()
        assert all(status == 200 for status, _ in seen)
        versions = [v for _, v in seen]
        assert versions[0] == int(first.version) and versions[-1] == new
        assert versions == sorted(versions, key=lambda v: v == new)  # old ones, then new ones only

        # The new session answers: the other model's predictions, not the first one's.
        labels, proba = answers(httpx.post(f"{server.url}/predict", json=records(test_set, features), timeout=30))
        expected_labels, expected_proba = predict_onnx(load_model(ws, f"{other}:1").onnx,
                                                       test_set[features].to_numpy(dtype=np.float32))
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(proba, expected_proba, atol=1e-6)
        assert httpx.get(f"{server.url}/metadata").json()["kind"] == get_version(ws, f"{other}:1").tags["mlpipe.kind"]
