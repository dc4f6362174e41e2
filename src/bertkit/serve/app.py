"""The HTTP API: FastAPI over a :class:`~bertkit.infer.predictor.Predictor`, with micro-batching and limits.

Endpoints (POST, JSON in and out, one result per text, each flagged ``truncated`` when its text was cut):
    /v1/classify   {"texts": [...], "pairs": [...] (pair models)}   -> label, score, probabilities
    /v1/tag        {"texts": [...]}                                 -> entities with character spans
    /v1/answer     {"texts": [questions], "contexts": [...]}        -> answer text, score, character span
    /v1/fill-mask  {"texts": [...], "top_k": 5}                     -> candidates per [MASK]
    /v1/embed      {"texts": [...], "pooling": "mean", "normalize": false} -> vectors
A model serves its own task plus embed (and fill-mask with an MLM head); the other endpoints answer 404
naming the task the model was trained for. GET /healthz, GET /metrics (Prometheus; with the process's
resident memory), GET /docs (OpenAPI).

Every error is JSON ``{"error": message, "status": code}``: 413 for a body or text count over the limit, 422 for
a malformed request (wrong types, missing contexts, a text over the character limit), 401 for a missing or
wrong API key when one is set, 400 for a body that is not valid JSON or UTF-8. The model runs on one worker
thread (:mod:`bertkit.serve.batcher`); on shutdown the server stops accepting, finishes what is in flight,
then stops the worker. After a model call the worker returns freed heap memory to the OS at most once per
``trim_interval_s`` (:mod:`bertkit.infer.memory`), which keeps the resident size flat under load.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Hashable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException

from bertkit.infer.memory import HeapTrimmer
from bertkit.infer.predictor import Predictor
from bertkit.serve.batcher import MicroBatcher
from bertkit.serve.metrics import ServerMetrics

log = logging.getLogger("bertkit")

ENDPOINTS = {"classify": "classify", "tag": "tag", "answer": "answer", "fill-mask": "fill_mask", "embed": "embed"}


@dataclass(frozen=True)
class ServeSettings:
    """Batching and request limits. ``api_key``: when set, /v1/ requests must send it (Bearer or X-API-Key).

    ``trim_interval_s``: after a model call, hand freed heap memory back to the OS if this long has passed
    since the last time (None: never). Without it the resident size climbs under varied request shapes;
    see :mod:`bertkit.infer.memory`.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 2_000_000
    max_texts: int = 256
    max_text_chars: int = 20_000
    api_key: str | None = None
    trim_interval_s: float | None = 1.0


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(description="the inputs; one result per text, in order")


class ClassifyRequest(_Request):
    pairs: list[StrictStr] | None = Field(None, description="second texts, for models fine-tuned on pairs")


class TagRequest(_Request):
    pass


class AnswerRequest(_Request):
    texts: list[StrictStr] = Field(description="the questions")
    contexts: list[StrictStr] = Field(description="one passage per question, where the answer is looked for")


class FillMaskRequest(_Request):
    top_k: int = Field(5, ge=1, le=100)


class EmbedRequest(_Request):
    pooling: Literal["mean", "cls"] = "mean"
    normalize: StrictBool = False


class _ApiError(HTTPException):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _results(predictor: Predictor, kind: Hashable, items: list[Any]) -> list[dict[str, Any]]:
    """Run one merged batch on the predictor; JSON-ready results. Runs on the worker thread."""
    name, *options = kind
    if name == "classify":
        texts, pairs = [t for t, _ in items], [p for _, p in items]
        return [asdict(r) for r in predictor.classify(texts, None if pairs[0] is None else pairs)]
    if name == "tag":
        return [asdict(r) for r in predictor.tag(items)]
    if name == "answer":
        return [asdict(r) for r in predictor.answer([q for q, _ in items], [c for _, c in items])]
    if name == "fill_mask":
        return [asdict(r) for r in predictor.fill_mask(items, top_k=options[0])]
    pooling, normalize = options
    out = predictor.embed(items, pooling=pooling, normalize=normalize)
    return [{"embedding": v.tolist(), "truncated": t} for v, t in zip(out.vectors, out.truncated, strict=True)]


class _Guard:
    """ASGI middleware: the body-size limit (413 before the body is read) and per-request metrics."""

    def __init__(self, app: Any, metrics: ServerMetrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path.removeprefix("/v1/") if path.startswith("/v1/") else path.strip("/") or "root"
        if endpoint not in (*ENDPOINTS, "healthz", "metrics", "docs", "openapi.json"):
            endpoint = "other"  # unknown paths share one label, so scanners cannot grow the metrics
        started, status = time.perf_counter(), [500]
        received = [0]
        limit = self.max_body_bytes

        async def limited_receive() -> dict:
            message = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > limit:
                raise _ApiError(413, f"request body is over the limit of {limit} bytes")
            return message

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > limit:
                response = _error(413, f"request body of {int(length)} bytes is over the limit of {limit} bytes")
                await response(scope, receive, recording_send)
            else:
                await self.app(scope, limited_receive, recording_send)
        finally:
            self.metrics.record_request(endpoint, status[0], time.perf_counter() - started)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor``; the batcher's worker lives as long as the app."""
    settings = settings or ServeSettings()
    trimmer = HeapTrimmer(settings.trim_interval_s) if settings.trim_interval_s is not None else None
    metrics = ServerMetrics(trimmer)
    state: dict[str, MicroBatcher] = {}

    def on_batch(kind: Hashable, items: int, jobs: int) -> None:
        metrics.batch_size.observe(items, kind[0])
        metrics.batch_requests.observe(jobs, kind[0])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = MicroBatcher(lambda kind, items: _results(predictor, kind, items),
                                        settings.max_batch, settings.max_wait_ms, on_batch,
                                        trimmer.maybe_trim if trimmer is not None else None)
        yield
        await asyncio.to_thread(state["batcher"].close)

    app = FastAPI(title="bertkit", version="0.1.0", lifespan=lifespan,
                  description=f"Model: {predictor.directory.name}; task: {predictor.task or 'none (encoder)'}")
    _add_error_handlers(app)
    app.add_middleware(_Guard, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "task": predictor.task, "endpoints": _served(predictor)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    router = APIRouter(prefix="/v1", dependencies=[Depends(_key_check(settings.api_key))])
    _add_routes(router, predictor, settings, state)
    app.include_router(router)
    return app


def _served(predictor: Predictor) -> list[str]:
    return [f"/v1/{path}" for path, capability in ENDPOINTS.items() if capability in predictor.capabilities]


def _key_check(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        sent = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(sent.encode(), api_key.encode()):
            raise _ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")

    return check


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = error.detail
        if error.status_code == 400:
            message = "request body is not valid JSON (or not UTF-8)"
        return _error(error.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for e in error.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        if any(e.get("type") == "json_invalid" for e in error.errors()):
            return _error(400, "request body is not valid JSON: " + "; ".join(problems))
        return _error(422, "; ".join(problems))


def _supports(predictor: Predictor, endpoint: str):
    """A route dependency: 404 naming the model's task, before the body is even validated."""

    def check() -> None:
        if ENDPOINTS[endpoint] not in predictor.capabilities:
            trained = f"fine-tuned for task {predictor.task!r}" if predictor.task else "a plain encoder (no task head)"
            raise _ApiError(404, f"this model is {trained}; it serves {', '.join(_served(predictor))}, "
                                 f"not /v1/{endpoint}")

    return Depends(check)


def _check(settings: ServeSettings, columns: dict[str, list[str]]) -> None:
    """413 / 422 for requests over the limits."""
    texts = columns["texts"]
    if len(texts) > settings.max_texts:
        raise _ApiError(413, f"{len(texts)} texts in one request; the limit is {settings.max_texts}")
    for name, values in columns.items():
        if len(values) != len(texts):
            raise _ApiError(422, f"{len(texts)} texts but {len(values)} {name}")
        for i, value in enumerate(values):
            if len(value) > settings.max_text_chars:
                raise _ApiError(422, f"{name}[{i}] has {len(value)} characters; the limit is "
                                     f"{settings.max_text_chars}")


def _add_routes(router: APIRouter, predictor: Predictor, settings: ServeSettings, state: dict) -> None:
    async def run(kind: tuple, items: list[Any]) -> dict[str, Any]:
        if not items:
            return {"results": []}
        try:
            results = await asyncio.wrap_future(state["batcher"].submit(kind, items))
        except (ValueError, TypeError) as e:
            raise _ApiError(422, str(e)) from None
        except Exception:
            log.exception("model call failed")
            raise _ApiError(500, "the model failed on this request; see the server log") from None
        return {"results": results}

    @router.post("/classify", dependencies=[_supports(predictor, "classify")])
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        """Label and class probabilities per text (or text pair); the value for regression models."""
        _check(settings, {"texts": body.texts, **({"pairs": body.pairs} if body.pairs else {})})
        if (body.pairs is not None) != (predictor.task == "pair"):
            need = "needs" if predictor.task == "pair" else "takes no"
            raise _ApiError(422, f"this model was fine-tuned for task {predictor.task!r}: it {need} 'pairs'")
        return await run(("classify",), list(zip(body.texts, body.pairs or [None] * len(body.texts), strict=True)))

    @router.post("/tag", dependencies=[_supports(predictor, "tag")])
    async def tag(body: TagRequest) -> dict[str, Any]:
        """Entities with character spans [start, end) into each text."""
        _check(settings, {"texts": body.texts})
        return await run(("tag",), body.texts)

    @router.post("/answer", dependencies=[_supports(predictor, "answer")])
    async def answer(body: AnswerRequest) -> dict[str, Any]:
        """The answer span of each question (texts) in its context."""
        _check(settings, {"texts": body.texts, "contexts": body.contexts})
        return await run(("answer",), list(zip(body.texts, body.contexts, strict=True)))

    @router.post("/fill-mask", dependencies=[_supports(predictor, "fill-mask")])
    async def fill_mask(body: FillMaskRequest) -> dict[str, Any]:
        """Top-k candidate tokens for every mask token ([MASK], or <mask> for RoBERTa) in each text."""
        _check(settings, {"texts": body.texts})
        mask = predictor.mask_token
        missing = [i for i, text in enumerate(body.texts) if mask not in text]
        if missing:
            raise _ApiError(422, f"texts[{missing[0]}] has no {mask}; write {mask} where a word should be predicted")
        return await run(("fill_mask", body.top_k), body.texts)

    @router.post("/embed", dependencies=[_supports(predictor, "embed")])
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        """One vector per text (mean of its tokens or the [CLS] vector)."""
        _check(settings, {"texts": body.texts})
        return await run(("embed", body.pooling, body.normalize), body.texts)
