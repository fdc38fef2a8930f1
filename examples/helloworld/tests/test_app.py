"""Tests of helloworld, run against TEST_REMOTE_URL (`mse cloud test` and
`mse cloud localtest` set it, and make the verified certificate trusted)."""

import os

import requests

URL = os.environ["TEST_REMOTE_URL"].rstrip("/")


def test_hello():
    r = requests.get(URL + "/", timeout=10)
    assert r.status_code == 200
    assert r.text == "Hello world!"


def test_health():
    r = requests.get(URL + "/health", timeout=10)
    assert r.status_code == 200
