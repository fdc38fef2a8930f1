"""pandas-stats: POST a CSV, get per-column statistics computed with pandas
inside the enclave. The data never leaves it in clear: only the summary does."""

import io
from http import HTTPStatus

import pandas as pd
from flask import Flask, jsonify, request

app = Flask(__name__)
MAX_BYTES = 8 << 20


@app.get("/health")
def health():
    return "OK"


@app.post("/stats")
def stats():
    if request.content_length is None or request.content_length > MAX_BYTES:
        return jsonify(error="send a CSV body of at most 8 MiB"), HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    try:
        df = pd.read_csv(io.BytesIO(request.get_data()))
    except Exception as e:  # pandas says what is wrong with the CSV
        return jsonify(error="not a CSV: %s" % e), HTTPStatus.UNPROCESSABLE_ENTITY
    numeric = df.select_dtypes("number")
    return jsonify(
        rows=int(len(df)),
        columns=list(df.columns),
        mean={c: float(numeric[c].mean()) for c in numeric},
        sum={c: float(numeric[c].sum()) for c in numeric},
        pandas=pd.__version__,
    )
