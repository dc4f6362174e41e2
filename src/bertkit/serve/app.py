"""The HTTP API: FastAPI over a :class:`~bertkit.infer.predictor.Predictor`, with micro-batching and limits.

Endpoints (POST, JSON in and out, one result per text, each flagged ``truncated`` when its text was cut):
    /v1/classify   {"texts": [...], "pairs": [...] (pair models)}   -> label, score, probabilities
    /v1/tag        {"texts": [...]}                                 -> entities with character spans
    /v1/answer     {"texts": [questions], "contexts": [...]}        -> answer text, score, character span
    /v1/fill-mask  {"texts": [...], "top_k": 5}                     -> candidates per [MASK]
    /v1/embed      {"texts": [...], "pooling": "mean", "normalize": false} -> vectors
A model serves its own task plus embed (and fill-mask with an MLM head); the other endpoints answer 404
naming the task the model was trained for. GET /healthz, GET /metrics (Prometheus, with the standard
process metrics), GET /docs (OpenAPI).

With an API key set, every path but /healthz needs it (/metrics too, unless ``public_metrics``), sent as
``Authorization: Bearer KEY`` (the scheme in any case) or ``X-API-Key: KEY``; a bare key is not a credential.

Every error is JSON ``{"error": message, "status": code}``: 413 for a body or text count over the limit, 422 for
a malformed request (wrong types, missing contexts, a text over the character limit), 401 for a missing or
wrong API key, 400 for a body that is not valid JSON or UTF-8, 503 with ``Retry-After`` when the queue is
full, 504 when a request passes its deadline (``request_timeout_s``; its work is dropped). A request whose
client hangs up is dropped before the model runs it (counted as status 499; one whose body never arrived
whole, as 408). uvicorn's side (a deadline on reading a request, the concurrency limit) is
:mod:`bertkit.serve.server`.

The model runs on one worker thread (:mod:`bertkit.serve.batcher`); on shutdown the server stops accepting,
finishes what is in flight, then stops the worker. After a model call the worker returns freed heap memory
to the OS at most once per ``trim_interval_s`` (:mod:`bertkit.infer.memory`), which keeps the resident size
flat under load.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Hashable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, NoReturn

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException

from bertkit.infer.memory import HeapTrimmer
from bertkit.infer.predictor import Predictor
from bertkit.serve.batcher import DeadlineExceeded, MicroBatcher, QueueFull
from bertkit.serve.metrics import CONTENT_TYPE, ServerMetrics

log = logging.getLogger("bertkit")

ENDPOINTS = {"classify": "classify", "tag": "tag", "answer": "answer", "fill-mask": "fill_mask", "embed": "embed"}
RETRY_AFTER_S = 1  # what a 503 for a full queue tells the client to wait
CHARS_PER_UNIT = 256  # about 64 tokens of English: a text this long or shorter counts 1 toward max_batch


class SettingError(ValueError):
    """A setting out of its range; ``name`` is the field, so the command line can name its flag."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


@dataclass(frozen=True)
class ServeSettings:
    """Batching, request limits, backpressure and access.

    ``max_queue``: texts queued or running at once; a request that would pass it gets 503 with
    ``Retry-After``. ``request_timeout_s``: a request not answered this long after it arrived gets 504 and
    its remaining work is dropped. ``api_key``: when set, every path but /healthz needs it (/metrics too,
    unless ``public_metrics``). ``trim_interval_s``: after a model call, hand freed heap memory back to the
    OS if this long has passed since the last time (None: never); without it the resident size climbs under
    varied request shapes, see :mod:`bertkit.infer.memory`.
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 2_000_000
    max_texts: int = 256
    max_text_chars: int = 20_000
    max_queue: int = 1024
    request_timeout_s: float = 30.0
    api_key: str | None = None
    public_metrics: bool = False
    trim_interval_s: float | None = 1.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_texts", "max_text_chars"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.max_queue < self.max_texts:
            raise SettingError("max_queue", f"must hold one full request of max_texts={self.max_texts} texts, "
                                            f"got {self.max_queue}")
        if not self.max_wait_ms >= 0:
            raise SettingError("max_wait_ms", f"must be 0 or more, got {self.max_wait_ms}")
        if not self.request_timeout_s > 0:
            raise SettingError("request_timeout_s", f"must be more than 0 seconds, got {self.request_timeout_s}")
        if self.trim_interval_s is not None and not self.trim_interval_s >= 0:
            raise SettingError("trim_interval_s", f"must be 0 or more (or None), got {self.trim_interval_s}")
        if self.api_key == "":
            raise SettingError("api_key", "is empty; pass None to serve without a key")


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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


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


def _sent_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, the scheme in any case.

    A bare ``Authorization: KEY`` is not a credential: proxies and logs treat the header by its scheme.
    """
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _key_matches(headers: dict[bytes, bytes], api_key: str) -> bool:
    sent = _sent_key(headers)
    return sent is not None and hmac.compare_digest(sent.encode(), api_key.encode())


class _Guard:
    """ASGI middleware, before any body is read: the API key (401), the body-size limit (413), and
    per-request metrics. Being outside FastAPI, the key check covers /docs, /openapi.json and unknown paths."""

    def __init__(self, app: Any, metrics: ServerMetrics, settings: ServeSettings) -> None:
        self.app, self.metrics = app, metrics
        self.max_body_bytes, self.api_key = settings.max_body_bytes, settings.api_key
        self.open_paths = {"/healthz", *(["/metrics"] if settings.public_metrics else [])}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path.removeprefix("/v1/") if path.startswith("/v1/") else path.strip("/") or "root"
        if endpoint not in (*ENDPOINTS, "healthz", "metrics", "docs", "openapi.json"):
            endpoint = "other"  # unknown paths share one label, so scanners cannot grow the metrics
        started, status = time.perf_counter(), [500]
        received, whole = [0], [False]
        limit = self.max_body_bytes

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect" and not whole[0]:  # cut off by the read deadline, or gone
                raise _ApiError(408, "the request did not arrive whole")
            whole[0] = not message.get("more_body", False)
            received[0] += len(message.get("body", b""))
            if received[0] > limit:
                raise _ApiError(413, f"request body is over the limit of {limit} bytes")
            return message

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            if self.api_key is not None and path not in self.open_paths and not _key_matches(headers, self.api_key):
                refusal = _error(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
            elif length is not None and length.isdigit() and int(length) > limit:
                refusal = _error(413, f"request body of {int(length)} bytes is over the limit of {limit} bytes")
            else:
                refusal = None
                await self.app(scope, limited_receive, recording_send)
            if refusal is not None:
                await refusal(scope, receive, recording_send)
        finally:
            self.metrics.record_request(endpoint, status[0], time.perf_counter() - started)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor``; the batcher's worker lives as long as the app."""
    settings = settings or ServeSettings()
    trimmer = HeapTrimmer(settings.trim_interval_s) if settings.trim_interval_s is not None else None
    metrics = ServerMetrics(trimmer)
    state: dict[str, MicroBatcher] = {}

    def on_batch(kind: Hashable, items: int, jobs: int) -> None:
        metrics.batch_size.labels(kind[0]).observe(items)
        metrics.batch_requests.labels(kind[0]).observe(jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = MicroBatcher(lambda kind, items: _results(predictor, kind, items),
                                        settings.max_batch, settings.max_wait_ms, on_batch,
                                        trimmer.maybe_trim if trimmer is not None else None, settings.max_queue)
        metrics.queued.set_function(lambda: state["batcher"].held)
        yield
        await asyncio.to_thread(state["batcher"].close)

    app = FastAPI(title="bertkit", version="0.1.0", lifespan=lifespan,
                  description=f"Model: {predictor.directory.name}; task: {predictor.task or 'none (encoder)'}")
    _add_error_handlers(app)
    app.add_middleware(_Guard, metrics=metrics, settings=settings)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "task": predictor.task, "endpoints": _served(predictor)}

    @app.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    router = APIRouter(prefix="/v1")
    _add_routes(router, predictor, settings, _Runner(state, settings, metrics, predictor.max_length))
    app.include_router(router)
    return app


def _served(predictor: Predictor) -> list[str]:
    return [f"/v1/{path}" for path, capability in ENDPOINTS.items() if capability in predictor.capabilities]


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = error.detail
        if error.status_code == 400:
            message = "request body is not valid JSON (or not UTF-8)"
        return _error(error.status_code, str(message), error.headers)

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


def _weight(item: Any, cap: int | None) -> int:
    """What an item counts toward ``max_batch``: one per 256 characters begun, so a model call of long texts
    holds fewer of them and lasts about as long as one of short texts. At most ``cap``, the cost of the
    longest sequence the model takes (None for QA, whose long contexts run as several windows)."""
    chars = len(item) if isinstance(item, str) else sum(len(part) for part in item if part)
    units = max(1, -(-chars // CHARS_PER_UNIT))
    return units if cap is None else min(units, cap)


async def _hung_up(request: Request) -> None:
    """Returns once the client disconnects: with the body read, the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _Runner:
    """Runs one request's texts through the batcher under the backpressure rules: a full queue refuses at
    once (503), a request past its deadline (504) or whose client hung up has its unrun work dropped."""

    def __init__(self, state: dict[str, MicroBatcher], settings: ServeSettings, metrics: ServerMetrics,
                 max_length: int) -> None:
        self.state, self.metrics = state, metrics
        self.weight_cap = max(1, max_length * 4 // CHARS_PER_UNIT)  # ~4 characters a token
        self.timeout = None if math.isinf(settings.request_timeout_s) else settings.request_timeout_s

    async def __call__(self, request: Request, kind: tuple, items: list[Any]) -> dict[str, Any]:
        if not items:
            return {"results": []}
        if await request.is_disconnected():
            self._drop(kind, "disconnected")
        try:
            cap = None if kind[0] == "answer" else self.weight_cap
            weights = [_weight(item, cap) for item in items]
            job = asyncio.wrap_future(self.state["batcher"].submit(kind, items, self.timeout, weights))
        except QueueFull as e:
            self._drop(kind, "queue_full", str(e))
        hung_up = asyncio.ensure_future(_hung_up(request))
        try:
            await asyncio.wait((job, hung_up), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hung_up.cancel()
            job.cancel()  # a no-op once answered; otherwise the batcher drops what has not run yet
        if job.cancelled():
            self._drop(kind, "disconnected" if hung_up.done() and not hung_up.cancelled() else "deadline")
        try:
            return {"results": job.result()}
        except DeadlineExceeded:
            self._drop(kind, "deadline")
        except (ValueError, TypeError) as e:
            raise _ApiError(422, str(e)) from None
        except Exception:
            log.exception("model call failed")
            raise _ApiError(500, "the model failed on this request; see the server log") from None

    def _drop(self, kind: tuple, reason: str, detail: str = "") -> NoReturn:
        """Count the dropped request and raise the answer it gets."""
        self.metrics.record_drop(kind[0], reason)
        if reason == "queue_full":
            raise _ApiError(503, f"the server is busy ({detail}); retry after {RETRY_AFTER_S} s",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
        if reason == "deadline":
            raise _ApiError(504, f"the request was not answered within its deadline of {self.timeout:g} s; "
                                 "its work was dropped")
        raise _ApiError(499, "the client closed the connection before the answer")  # nobody reads it


def _add_routes(router: APIRouter, predictor: Predictor, settings: ServeSettings, run: _Runner) -> None:
    @router.post("/classify", dependencies=[_supports(predictor, "classify")])
    async def classify(request: Request, body: ClassifyRequest) -> dict[str, Any]:
        """Label and class probabilities per text (or text pair); the value for regression models."""
        _check(settings, {"texts": body.texts, **({"pairs": body.pairs} if body.pairs else {})})
        needs_pairs = predictor.spec.family.needs_pairs
        if (body.pairs is not None) != needs_pairs:
            need = "needs" if needs_pairs else "takes no"
            raise _ApiError(422, f"this model was fine-tuned for task {predictor.task!r}: it {need} 'pairs'")
        pairs = body.pairs or [None] * len(body.texts)
        return await run(request, ("classify",), list(zip(body.texts, pairs, strict=True)))

    @router.post("/tag", dependencies=[_supports(predictor, "tag")])
    async def tag(request: Request, body: TagRequest) -> dict[str, Any]:
        """Entities with character spans [start, end) into each text."""
        _check(settings, {"texts": body.texts})
        return await run(request, ("tag",), body.texts)

    @router.post("/answer", dependencies=[_supports(predictor, "answer")])
    async def answer(request: Request, body: AnswerRequest) -> dict[str, Any]:
        """The answer span of each question (texts) in its context."""
        _check(settings, {"texts": body.texts, "contexts": body.contexts})
        return await run(request, ("answer",), list(zip(body.texts, body.contexts, strict=True)))

    @router.post("/fill-mask", dependencies=[_supports(predictor, "fill-mask")])
    async def fill_mask(request: Request, body: FillMaskRequest) -> dict[str, Any]:
        """Top-k candidate tokens for every mask token ([MASK], or <mask> for RoBERTa) in each text."""
        _check(settings, {"texts": body.texts})
        mask = predictor.mask_token
        missing = [i for i, text in enumerate(body.texts) if mask not in text]
        if missing:
            raise _ApiError(422, f"texts[{missing[0]}] has no {mask}; write {mask} where a word should be predicted")
        return await run(request, ("fill_mask", body.top_k), body.texts)

    @router.post("/embed", dependencies=[_supports(predictor, "embed")])
    async def embed(request: Request, body: EmbedRequest) -> dict[str, Any]:
        """One vector per text (mean of its tokens or the [CLS] vector)."""
        _check(settings, {"texts": body.texts})
        return await run(request, ("embed", body.pooling, body.normalize), body.texts)
