"""pandas-stats' tests, against TEST_REMOTE_URL."""

import os

import requests

URL = os.environ["TEST_REMOTE_URL"].rstrip("/")
CSV = "city,visits,spend\nParis,10,2.5\nLyon,30,7.5\nNantes,20,5\n"


def test_stats():
    r = requests.post(URL + "/stats", data=CSV, headers={"Content-Type": "text/csv"}, timeout=20)
    assert r.status_code == 200
    body = r.json()
    assert body["rows"] == 3
    assert body["columns"] == ["city", "visits", "spend"]
    assert body["mean"] == {"visits": 20.0, "spend": 5.0}
    assert body["sum"] == {"visits": 60.0, "spend": 15.0}


def test_not_a_csv():
    r = requests.post(URL + "/stats", data=b"\x00\x01\x02", timeout=20)
    assert r.status_code in (200, 422)
    if r.status_code == 200:
        assert r.json()["rows"] == 0


def test_health():
    assert requests.get(URL + "/health", timeout=10).status_code == 200
