"""Who may use the server, and how ``bertkit serve`` refuses bad flags: the API key on every path but
/healthz, a public bind only with a key (or an explicit opt-out), one-line errors for bad serve flags."""

from __future__ import annotations

import socket

import httpx
import pytest
import torch

from bertkit.cli import main
from bertkit.infer.predictor import Predictor
from bertkit.serve.app import ServeSettings, SettingError, create_app
from infer_toys import make_model_dirs
from serve_helpers import Server

KEY = "s3cret"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return make_model_dirs(tmp_path_factory.mktemp("access"))["pretrained"]


@pytest.fixture(scope="module")
def keyed(model_dir):
    with Server(create_app(Predictor(model_dir), ServeSettings(api_key=KEY))) as server:
        yield server.url


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/healthz", {}, 200),
    ("/metrics", {}, 401),
    ("/docs", {}, 401),
    ("/openapi.json", {}, 401),
    ("/no/such/path", {}, 401),
    ("/v1/embed", {}, 401),
    ("/v1/embed", {"Authorization": f"Bearer {KEY}"}, 200),
    ("/v1/embed", {"Authorization": f"bearer {KEY}"}, 200),
    ("/v1/embed", {"Authorization": f"BEARER  {KEY}"}, 200),
    ("/v1/embed", {"X-API-Key": KEY}, 200),
    ("/v1/embed", {"Authorization": KEY}, 401),
    ("/v1/embed", {"Authorization": f"Basic {KEY}"}, 401),
    ("/v1/embed", {"Authorization": "Bearer wrong"}, 401),
    ("/v1/embed", {"Authorization": "Bearer"}, 401),
    ("/v1/embed", {"X-API-Key": "wrong", "Authorization": f"Bearer {KEY}"}, 401),
    ("/metrics", {"Authorization": f"Bearer {KEY}"}, 200),
    ("/docs", {"Authorization": f"Bearer {KEY}"}, 200),
    ("/openapi.json", {"X-API-Key": KEY}, 200),
])
def test_with_a_key_set_every_path_but_healthz_needs_it(keyed, path, headers, status):
    if path.startswith("/v1/"):
        response = httpx.post(f"{keyed}{path}", json={"texts": ["a"]}, headers=headers)
    else:
        response = httpx.get(f"{keyed}{path}", headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert "API key" in response.json()["error"]


def test_metrics_can_be_left_open_while_the_rest_needs_the_key(model_dir):
    settings = ServeSettings(api_key=KEY, public_metrics=True)
    with Server(create_app(Predictor(model_dir), settings)) as server:
        metrics = httpx.get(f"{server.url}/metrics")
        docs = httpx.get(f"{server.url}/docs")
    assert metrics.status_code == 200 and "process_resident_memory_bytes" in metrics.text
    assert docs.status_code == 401


def test_settings_out_of_range_name_the_setting():
    with pytest.raises(SettingError, match="max_queue must hold one full request") as error:
        ServeSettings(max_texts=16, max_queue=8)
    assert error.value.name == "max_queue"
    with pytest.raises(SettingError, match="request_timeout_s must be more than 0"):
        ServeSettings(request_timeout_s=0)


@pytest.fixture
def busy_port():
    """A port something else already listens on, on every interface."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("flags", "message"), [
    (["--port", "-1"], "--port: must be between 1 and 65535, got -1"),
    (["--port", "70000"], "--port: must be between 1 and 65535, got 70000"),
    (["--max-batch", "0"], "--max-batch: must be >= 1, got 0"),
    (["--max-texts", "0"], "--max-texts: must be >= 1, got 0"),
    (["--max-body-bytes", "-5"], "--max-body-bytes: must be >= 1, got -5"),
    (["--max-queue", "8", "--max-texts", "16"], "--max-queue must hold one full request of max_texts=16"),
    (["--max-wait-ms", "-1"], "--max-wait-ms: must be >= 0, got -1"),
    (["--request-timeout", "0"], "--request-timeout: must be > 0, got 0"),
    (["--read-timeout", "nan"], "--read-timeout: must be > 0, got nan"),
    (["--limit-concurrency", "0"], "--limit-concurrency: must be >= 1, got 0"),
    (["--threads", "0"], "--threads: must be >= 1, got 0"),
    (["--shutdown-timeout", "-1"], "--shutdown-timeout: must be >= 0, got -1"),
    (["--device", "bogus"], "--device 'bogus' is not a device; use cpu, cuda or cuda:N"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines and no API key is set"),
    (["--host", "::"], "--host :: is reachable from other machines and no API key is set"),
])
def test_bad_serve_flags_end_in_one_line(model_dir, flags, message, capsys, monkeypatch):
    monkeypatch.delenv("BERTKIT_API_KEY", raising=False)
    try:
        code = main(["serve", "--model", str(model_dir), *flags])
    except SystemExit as stop:  # a number out of range is refused by the parser, as for every command
        code = stop.code
    err = capsys.readouterr().err
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(("host", "flags", "key"), [
    ("127.0.0.1", [], ""),
    ("0.0.0.0", ["--allow-public-without-key"], ""),  # the opt-out passes the public-bind check
    ("0.0.0.0", [], KEY),  # so does a key
])
def test_a_busy_port_ends_in_one_line(model_dir, busy_port, host, flags, key, capsys, monkeypatch):
    monkeypatch.setenv("BERTKIT_API_KEY", key)
    code = main(["serve", "--model", str(model_dir), "--host", host, "--port", str(busy_port), *flags])
    err = capsys.readouterr().err
    assert code != 0 and f"cannot listen on --host {host} --port {busy_port}: Address already in use" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
