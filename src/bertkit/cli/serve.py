"""Serving commands: ``serve`` (the HTTP API) and ``export onnx``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bertkit.cli.common import UsageError
from bertkit.config import DTYPES

API_KEY_ENV = "BERTKIT_API_KEY"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from bertkit.serve.app import ServeSettings, SettingError, create_app
        from bertkit.serve.server import is_loopback, listen, server_config
    except ImportError:
        raise UsageError("serving needs FastAPI, uvicorn and prometheus_client: pip install 'bertkit[serve]'") from None
    from bertkit.infer.predictor import Predictor

    _check_device(args)
    api_key = os.environ.get(API_KEY_ENV) or None
    try:
        settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                                 max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                                 max_queue=args.max_queue, request_timeout_s=args.request_timeout, api_key=api_key,
                                 public_metrics=args.metrics_without_key,
                                 trim_interval_s=None if args.trim_interval < 0 else args.trim_interval)
    except SettingError as e:
        flag = {"request_timeout_s": "request_timeout", "trim_interval_s": "trim_interval"}.get(e.name, e.name)
        raise UsageError(f"--{flag.replace('_', '-')} {e.problem}") from None
    if api_key is None and not is_loopback(args.host) and not args.allow_public_without_key:
        raise UsageError(f"--host {args.host} is reachable from other machines and no API key is set; set "
                         f"{API_KEY_ENV}, or pass --allow-public-without-key to serve it open")
    try:
        sock = listen(args.host, args.port)  # before the model loads: a busy port fails at once
    except OSError as e:
        raise UsageError(f"cannot listen on --host {args.host} --port {args.port}: {e.strerror or e}") from None
    predictor = Predictor(args.model, backend=args.backend, quantize=args.quantize, threads=args.threads,
                          batch_size=args.max_batch, device=args.device, dtype=args.dtype)
    config = server_config(create_app(predictor, settings), read_timeout_s=args.read_timeout,
                           limit_concurrency=args.limit_concurrency, shutdown_timeout_s=args.shutdown_timeout,
                           log_level="info" if args.verbose else "warning")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _check_device(args: argparse.Namespace) -> None:
    """The device name, checked before anything starts (numeric flags: the parser's ``NUMBER_RULES``; the rules
    between flags: ServeSettings)."""
    import torch

    try:
        torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N") from None


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from bertkit.infer.onnx_export import ONNX_FILE, export_onnx, quantize_onnx
    from bertkit.infer.predictor import load_model

    directory = Path(args.model)
    out = Path(args.out) if args.out else directory / ONNX_FILE
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model, _ = load_model(directory)
    export_onnx(model, out)
    if args.quantize == "int8":
        try:
            quantize_onnx(out, out)
        except ImportError:
            raise UsageError("--quantize int8 needs onnxruntime: pip install 'bertkit[onnx]'") from None
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB{', int8' if args.quantize else ''})")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (FastAPI): /v1/<task>, /healthz, /metrics, /docs",
                       description=f"Serve a model directory over HTTP. Set {API_KEY_ENV} to require an API key "
                                   "on every path but /healthz.")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 linears")
    p.add_argument("--threads", type=int, default=None, help="model threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="torch backend weights and compute (bf16: the GPU path)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="texts per model call, a text counting one per 256 characters up to the model's longest "
                        "sequence, so a call of long texts holds fewer (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join")
    p.add_argument("--max-texts", type=int, default=256, help="texts per request")
    p.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000)
    p.add_argument("--max-queue", type=int, default=1024,
                   help="texts queued or running at once; past it a request gets 503 with Retry-After "
                        "(at least --max-texts; default: 1024)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="seconds a request may wait and run; past it 504 and its work is dropped (default: 30)")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds to receive a whole request (headers and body) before the connection is closed "
                        "(default: 10)")
    p.add_argument("--limit-concurrency", type=int, default=256,
                   help="connections plus running requests; past it uvicorn answers 503 (default: 256)")
    p.add_argument("--allow-public-without-key", action="store_true",
                   help=f"serve a non-loopback --host without {API_KEY_ENV} (refused otherwise)")
    p.add_argument("--metrics-without-key", action="store_true",
                   help="leave /metrics open when an API key is set (everything but /healthz needs it otherwise)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds to finish requests on shutdown")
    p.add_argument("--trim-interval", type=float, default=1.0,
                   help="seconds between returning freed memory to the OS, which keeps RSS flat (negative: never)")
    p.set_defaults(handler=cmd_serve)

    export = sub.add_parser("export", help="export a model to another format").add_subparsers(
        dest="format", required=True)
    p = export.add_parser("onnx", help="export to ONNX (encoder + task head) for onnxruntime")
    p.add_argument("model", help="model directory")
    p.add_argument("--out", help="ONNX file to write (default: MODEL/model.onnx, used by --backend onnx)")
    p.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 with onnxruntime")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=cmd_export_onnx)
