"""Serving commands: ``serve`` (the HTTP API) and ``export onnx``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bertkit.cli.common import UsageError
from bertkit.config import DTYPES

API_KEY_ENV = "BERTKIT_API_KEY"


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from bertkit.serve.app import ServeSettings, create_app
    except ImportError:
        raise UsageError("serving needs FastAPI and uvicorn: pip install 'bertkit[serve]'") from None
    from bertkit.infer.predictor import Predictor

    if args.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(API_KEY_ENV):
        print(f"bertkit serve: warning: listening on {args.host} without an API key (set {API_KEY_ENV})")
    predictor = Predictor(args.model, backend=args.backend, quantize=args.quantize, threads=args.threads,
                          batch_size=args.max_batch, device=args.device, dtype=args.dtype)
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                             api_key=os.environ.get(API_KEY_ENV) or None,
                             trim_interval_s=None if args.trim_interval < 0 else args.trim_interval)
    app = create_app(predictor, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                timeout_graceful_shutdown=args.shutdown_timeout)


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
                       description=f"Serve a model directory over HTTP. Set {API_KEY_ENV} to require an API key.")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    p.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 linears")
    p.add_argument("--threads", type=int, default=None, help="model threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="torch backend weights and compute (bf16: the GPU path)")
    p.add_argument("--max-batch", type=int, default=32, help="texts per model call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join")
    p.add_argument("--max-texts", type=int, default=256, help="texts per request")
    p.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000)
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
