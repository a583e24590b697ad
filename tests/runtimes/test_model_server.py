"""The model runtime's server: typed inputs, 422s, errors as JSON, SSE streaming, health while loading."""

import json
import threading
import time
from collections.abc import Iterator

from fastapi.testclient import TestClient

from kiln_runtime.model.server import build_app


class Doubler:
    def load(self) -> None:
        self.factor = 2

    def predict(self, x: float, label: str = "none") -> dict[str, object]:
        if x < 0:
            raise ValueError("x must not be negative")
        return {"value": x * self.factor, "label": label}


class Words:
    def load(self) -> None:
        pass

    def predict(self, n: int = 3) -> Iterator[str]:
        yield from ["one", "two", "three"][:n]


class SlowLoad:
    release = threading.Event()

    def load(self) -> None:
        SlowLoad.release.wait(10)

    def predict(self) -> str:
        return "loaded"


def test_predict_takes_typed_inputs_and_wraps_the_output() -> None:
    with TestClient(build_app(Doubler)) as client:
        response = client.post("/predict", json={"x": 2.5, "label": "a"})
        assert response.json() == {"output": {"value": 5.0, "label": "a"}}
        assert client.post("/predict", json={"x": 1}).json()["output"]["label"] == "none"


def test_bad_inputs_are_422_naming_the_field() -> None:
    with TestClient(build_app(Doubler)) as client:
        missing = client.post("/predict", json={})
        wrong = client.post("/predict", json={"x": "lots"})
        extra = client.post("/predict", json={"x": 1, "y": 2})
    assert missing.status_code == wrong.status_code == extra.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "x"]
    assert extra.json()["detail"][0]["loc"] == ["body", "y"]


def test_an_exception_in_predict_is_a_json_500() -> None:
    with TestClient(build_app(Doubler), raise_server_exceptions=False) as client:
        response = client.post("/predict", json={"x": -1})
    assert response.status_code == 500
    assert response.json() == {"error": {"type": "ValueError", "message": "x must not be negative"}}


def test_a_generator_streams_server_sent_events() -> None:
    with (
        TestClient(build_app(Words)) as client,
        client.stream("POST", "/predict", json={"n": 2}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events == ['data: {"output": "one"}', 'data: {"output": "two"}', "data: [DONE]"]


def test_health_is_503_while_loading_and_200_after() -> None:
    with TestClient(build_app(SlowLoad)) as client:
        assert client.get("/healthz").status_code == 503
        SlowLoad.release.set()
        deadline = time.monotonic() + 5
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post("/predict", json={}).json() == {"output": "loaded"}


def test_the_openapi_page_describes_the_inputs() -> None:
    with TestClient(build_app(Doubler)) as client:
        spec = client.get("/openapi.json").json()
    assert set(spec["components"]["schemas"]["Input"]["properties"]) == {"x", "label"}
    assert json.dumps(spec).count("/predict") >= 1
