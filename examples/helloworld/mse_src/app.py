"""helloworld: a WSGI app that uses only Python's standard library.

Inside MSE the node serves it on the loopback port given in PORT; app secrets
(if any) are in the JSON file named by SECRETS_PATH, and the code directory is
MODULE_PATH. Run it locally with:  PORT=8080 python3 app.py
"""

import os
from wsgiref.simple_server import make_server


def _reply(start_response, status, body, extra_headers=()):
    data = body.encode("utf-8")
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(data))),
    ]
    headers.extend(extra_headers)
    start_response(status, headers)
    return [data]


def _secrets_present():
    """Whether the app was given secrets; their content is never shown."""
    path = os.environ.get("SECRETS_PATH", "")
    return bool(path) and os.path.isfile(path)


def app(environ, start_response):
    """The WSGI application (python_application = "app:app")."""
    path = environ.get("PATH_INFO", "/") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return _reply(start_response, "405 Method Not Allowed", "Method Not Allowed\n",
                      [("Allow", "GET, HEAD")])
    if path == "/health":
        return _reply(start_response, "200 OK", "OK")
    if path == "/":
        secrets = "present" if _secrets_present() else "absent"
        return _reply(start_response, "200 OK", "Hello world!", [("X-App-Secrets", secrets)])
    return _reply(start_response, "404 Not Found", "Not Found\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    with make_server("127.0.0.1", port, app) as httpd:
        print(f"helloworld listening on http://127.0.0.1:{port}", flush=True)
        httpd.serve_forever()
