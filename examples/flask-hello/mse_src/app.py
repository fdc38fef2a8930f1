"""flask-hello: a small Flask API that keeps a counter in HOME and answers
only callers that know a token from its secrets.

The node gives the app: PORT (served by gunicorn), SECRETS_PATH (the JSON of
[cloud] secrets), HOME (writable, in enclave memory) and MODULE_PATH.
"""

import json
import os
import threading
from http import HTTPStatus

from flask import Flask, abort, jsonify, request

app = Flask(__name__)
_lock = threading.Lock()


def secrets():
    with open(os.environ["SECRETS_PATH"], encoding="utf-8") as f:
        return json.load(f)


def _counter_path():
    return os.path.join(os.environ.get("HOME", "/tmp"), "visits")


@app.get("/health")
def health():
    return "", HTTPStatus.OK


@app.get("/")
def hello():
    return secrets().get("greeting", "Hello world!")


@app.post("/visits")
def visit():
    """Counts visits in a file under HOME; needs the bearer token."""
    if request.headers.get("Authorization") != "Bearer " + secrets()["api_token"]:
        abort(HTTPStatus.UNAUTHORIZED)
    with _lock:
        try:
            with open(_counter_path(), encoding="ascii") as f:
                n = int(f.read() or 0)
        except FileNotFoundError:
            n = 0
        n += 1
        with open(_counter_path(), "w", encoding="ascii") as f:
            f.write(str(n))
    return jsonify(visits=n)
