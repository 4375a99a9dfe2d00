"""``pneumocxr serve --model M`` (the HTTP API and web page) and ``pneumocxr serve keys …`` (API keys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.serving.settings import MB


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (API + web page), with API keys and an audit log",
        description="Serve a checkpoint over a versioned HTTP API (OpenAPI schema at /openapi.json) with a "
        "web page at /, on ONNX Runtime (a checkpoint is exported once). Secure by default: binds "
        "127.0.0.1, requires API keys (`pneumocxr serve keys create NAME`), writes every prediction to an "
        "audit database before answering. Research use only.",
    )
    parser.add_argument("--model", type=Path, help="checkpoint, run folder or ensemble file to serve")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--db", help="audit/keys database: SQLite path or postgresql://… (default output/serve/audit.db)"
    )
    parser.add_argument("--no-auth", action="store_true", help="no API keys (only allowed on loopback)")
    parser.add_argument("--max-upload-mb", type=int, default=50, help="larger uploads get 413 (default 50)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504")
    parser.add_argument("--workers", type=int, default=1, help="model calls at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait; more get 503")
    parser.add_argument("--threads", type=int, help="CPU threads per model call (default: cores / workers)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--runtime",
        choices=("onnx", "torch"),
        default="onnx",
        help="onnx (default: ONNX Runtime; a checkpoint is exported once, beside the database) or torch",
    )
    parser.add_argument(
        "--card", type=Path, help="model card (Markdown) to show; default: built from the checkpoint"
    )
    parser.add_argument(
        "--cors-origin", action="append", default=[], help="allow this web origin (CORS off by default)"
    )
    parser.set_defaults(handler=run)
    keys = parser.add_subparsers(dest="serve_command", metavar="keys")
    keys_parser = keys.add_parser("keys", help="create, list or revoke API keys")
    keys_parser.add_argument("action", choices=("create", "list", "revoke"))
    keys_parser.add_argument("name", nargs="?", help="create: who uses the key; revoke: the key id")
    keys_parser.add_argument("--db", dest="keys_db", help="database (default output/serve/audit.db)")
    keys_parser.set_defaults(handler=run_keys)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pneumocxr.errors import ConfigError
    from pneumocxr.serving.app import create_app
    from pneumocxr.serving.settings import ServeSettings

    if args.model is None:
        raise ConfigError("serve needs --model (e.g. --model output/models/efficientnet_lite0.pt)")
    settings = ServeSettings(
        model=args.model,
        host=args.host,
        port=args.port,
        auth=not args.no_auth,
        db=args.db,
        max_upload_bytes=args.max_upload_mb * MB,
        timeout_s=args.timeout,
        workers=args.workers,
        max_queue=args.max_queue,
        device=args.device,
        runtime=args.runtime,
        threads=args.threads,
        card=args.card,
        cors_origins=tuple(args.cors_origin),
    ).check()
    app = create_app(settings)
    where = f"http://{settings.host}:{settings.port}/"
    print(f"pneumocxr serve: {where} (API schema at {where}openapi.json); Ctrl-C stops it")
    if settings.auth:
        print("API keys required: `pneumocxr serve keys create NAME` prints one")
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")
    return 0


def run_keys(args: argparse.Namespace) -> int:
    from pneumocxr.errors import ConfigError
    from pneumocxr.store import open_store
    from pneumocxr.store.keys import create_key, list_keys, revoke_key

    # `serve --db X keys …` names the database before `keys`: honour it (it used to be ignored silently,
    # so the key landed in the default database and the server on X refused it)
    store = open_store(args.keys_db or args.db)
    if args.action == "create":
        if not args.name:
            raise ConfigError("serve keys create NAME: say who or what will use the key")
        info, token = create_key(store, args.name)
        print(f"created key {info.id} for {info.name!r}; give the client this token (it is not shown again):")
        print(token)
    elif args.action == "revoke":
        if not args.name:
            raise ConfigError("serve keys revoke KEY_ID: `pneumocxr serve keys list` shows the ids")
        info = revoke_key(store, args.name)
        print(f"revoked {info.id} ({info.name})")
    else:
        for info in list_keys(store):
            state = "active" if info.active else f"revoked {info.revoked_at:%Y-%m-%d %H:%M} UTC"
            print(f"{info.id}  {info.name}  created {info.created_at:%Y-%m-%d %H:%M} UTC  {state}")
    return 0
