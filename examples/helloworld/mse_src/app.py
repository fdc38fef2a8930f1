"""helloworld: the smallest MSE app, a Flask application.

Inside MSE the node serves it with the runtime's gunicorn on the loopback port
given in PORT; app secrets (if any) are in the JSON file named by SECRETS_PATH,
and the code directory is MODULE_PATH. Run it locally with
`mse cloud localtest` (in the same runtime image), or `flask --app app run`.
"""

import os
from http import HTTPStatus

from flask import Flask, Response

app = Flask(__name__)


def _secrets_present():
    """Whether the app was given secrets; their content is never shown."""
    path = os.environ.get("SECRETS_PATH", "")
    return bool(path) and os.path.isfile(path)


@app.get("/health")
def health():
    """The healthcheck_endpoint: the node waits on it before serving."""
    return Response("OK", status=HTTPStatus.OK, mimetype="text/plain")


@app.get("/")
def hello():
    resp = Response("Hello world!", mimetype="text/plain")
    resp.headers["X-App-Secrets"] = "present" if _secrets_present() else "absent"
    return resp
