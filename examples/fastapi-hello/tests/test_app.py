"""fastapi-hello's tests, against TEST_REMOTE_URL (set by `mse cloud test`
and `mse cloud localtest`)."""

import hashlib
import os

import requests

URL = os.environ["TEST_REMOTE_URL"].rstrip("/")


def test_health():
    r = requests.get(URL + "/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_root_needs_the_key():
    assert requests.get(URL + "/", timeout=10).status_code == 401
    r = requests.get(URL + "/", headers={"X-Api-Key": "demo"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["message"] == "Hello from FastAPI"


def test_sha256():
    r = requests.post(URL + "/sha256", json={"text": "enclave"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"sha256": hashlib.sha256(b"enclave").hexdigest(), "length": 7}


def test_bad_body_is_422():
    assert requests.post(URL + "/sha256", json={"nope": 1}, timeout=10).status_code == 422
