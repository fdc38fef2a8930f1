"""fastapi-hello: a small FastAPI app. Its root needs an API key (so "/"
answers 401 to a plain GET: readiness is the health check, not "/"), and it
validates JSON bodies (422 on bad input)."""

import hashlib

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

app = FastAPI(title="fastapi-hello")


class Text(BaseModel):
    text: str


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/")
async def root(x_api_key: str = Header(default="")):
    if x_api_key != "demo":
        raise HTTPException(status_code=401, detail="send X-Api-Key: demo")
    return {"message": "Hello from FastAPI"}


@app.post("/sha256")
async def sha256(body: Text):
    return {"sha256": hashlib.sha256(body.text.encode()).hexdigest(), "length": len(body.text)}
