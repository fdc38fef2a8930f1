"""probe: a tenant's app that tries to reach what the sandbox must hide.

It reads its targets from the app secrets (SECRETS_PATH) and reports, per
target, what happened: "read", "wrote", "signalled", "connected", or the
Python exception's name. e2e's TestSandboxIsolation deploys it as two tenants.
"""

import json
import os
import socket

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/health")
def health():
    return "OK"


@app.get("/")
def root():
    return "probe"


def attempt(f):
    try:
        return f()
    except Exception as e:  # the name says what stopped it
        return type(e).__name__


def read(p):
    with open(p, "rb") as f:
        f.read(1)
    return "read"


def write(p):
    with open(p, "ab") as f:
        f.write(b"x")
    return "wrote"


def signal(pid):
    os.kill(pid, 0)
    return "signalled"


def tcp(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return "connected"
    finally:
        s.close()


def unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
        return "connected"
    finally:
        s.close()


@app.get("/probe")
def probe():
    try:
        with open(os.environ["SECRETS_PATH"]) as f:
            t = json.load(f)
    except Exception:
        t = {}
    procs = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    cmdlines = []
    for pid in procs:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdlines.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except Exception:
            pass
    return jsonify({
        "uid": os.getuid(),
        "gid": os.getgid(),
        "home": os.environ.get("HOME"),
        "home_writable": attempt(lambda: write(os.path.join(os.environ["HOME"], "probe"))),
        "paths": {p: attempt(lambda p=p: read(p)) for p in t.get("paths", [])},
        "writes": {p: attempt(lambda p=p: write(p)) for p in t.get("writes", [])},
        "pids": {str(p): attempt(lambda p=p: signal(p)) for p in t.get("pids", [])},
        "tcp": {str(p): attempt(lambda p=p: tcp(p)) for p in t.get("ports", [])},
        "unix": {p: attempt(lambda p=p: unix(p)) for p in t.get("sockets", [])},
        "procs": procs,
        "cmdlines": cmdlines,
    })
