"""flask-hello's tests: `mse cloud test` runs them against the deployed app,
`mse cloud localtest` against the app in its runtime on this machine. Both
set TEST_REMOTE_URL (and, for the deployed app, trust its verified
certificate)."""

import json
import os
from pathlib import Path

import requests

URL = os.environ["TEST_REMOTE_URL"].rstrip("/")
SECRETS = json.loads((Path(__file__).parent.parent / "secrets.json").read_text())


def test_greeting_comes_from_the_secrets():
    r = requests.get(URL + "/", timeout=10)
    assert r.status_code == 200
    assert r.text == SECRETS["greeting"]


def test_health():
    assert requests.get(URL + "/health", timeout=10).status_code == 200


def test_visits_need_the_token():
    assert requests.post(URL + "/visits", timeout=10).status_code == 401
    assert requests.post(URL + "/visits", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401


def test_visits_count_in_home():
    auth = {"Authorization": "Bearer " + SECRETS["api_token"]}
    first = requests.post(URL + "/visits", headers=auth, timeout=10).json()["visits"]
    second = requests.post(URL + "/visits", headers=auth, timeout=10).json()["visits"]
    assert second == first + 1
