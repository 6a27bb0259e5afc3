"""The ``tensorgate`` command: serve, export, verify, bench, demo."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from gateway import __version__


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="model store: a folder or s3://bucket/prefix (env TENSORGATE_STORE)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, help="REST port, 0 picks a free one (default 8000)")
    p.add_argument("--grpc-port", type=int, help="gRPC port, 0 picks a free one, -1 disables (default 8001)")
    p.add_argument("--metrics-port", type=int, help="dedicated /metrics port (default: HTTP port only)")
    p.add_argument(
        "--model-control",
        choices=["poll", "explicit", "none"],
        help="poll: follow the store; none: load once; explicit: only the repository API loads (default poll)",
    )
    p.add_argument("--poll-interval", type=float, help="seconds between store polls, 0 = load once (default 5)")
    p.add_argument("--load-model", action="append", dest="load_models", help="explicit mode: load at startup")
    p.add_argument(
        "--idle-thread-s", type=float, help="seconds an idle model keeps its executor threads, 0 = forever (default 30)"
    )
    p.add_argument("--max-request-bytes", type=int, help="largest accepted request body (413 beyond)")
    p.add_argument("--grpc-max-message-bytes", type=int, help="largest gRPC message in either direction")
    p.add_argument(
        "--grpc-server", choices=["aio", "h2"], help="gRPC server: the small HTTP/2 one (h2, default) or grpc.aio"
    )
    p.add_argument("--grace-period", type=float, help="seconds in-flight requests get on shutdown")
    p.add_argument("--shutdown-delay", type=float, help="after SIGTERM: seconds to keep serving while not ready")
    p.add_argument("--cache-dir", help="where S3 versions are downloaded")
    p.add_argument(
        "--config-overrides", help="folder of <model>.yaml files merged into the store's config.yaml field by field"
    )
    p.add_argument(
        "--workers",
        help="server processes sharing the ports (default 1; auto: the CPUs the container may use; README: Workers)",
    )
    p.add_argument("--port-file", help="write {http, grpc, metrics} ports as JSON once listening")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument(
        "--access-log", action="store_true", default=None, help="one line per inference request (JSON with json logs)"
    )
    p.add_argument("--access-log-sample", type=float, help="share of fast successful requests logged (default 1)")
    p.add_argument("--access-log-slow-ms", type=float, help="always log requests at least this slow (errors always)")
    p.add_argument(
        "--tracing",
        action="store_true",
        default=None,
        help="OpenTelemetry spans over OTLP, configured by OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, ...",
    )
    p.add_argument(
        "--metrics-compat", choices=["none", "triton"],
        help="triton: /metrics also has Triton's nv_inference_* families (labels model, version)",
    )  # fmt: skip
    tfs = p.add_argument_group("TF Serving (README: Coming from TF Serving)")
    tfs.add_argument(
        "--model_config_file", "--model-config-file", dest="model_config_file",
        help="TF Serving's ModelServerConfig text file (names, base paths, policies, labels); replaces --store",
    )  # fmt: skip
    tfs.add_argument(
        "--model_config_file_poll_wait_seconds", "--model-config-file-poll-wait-seconds", type=float,
        dest="model_config_file_poll_wait_seconds",
        help="seconds between re-reads of --model_config_file; 0 reads it once (default 0)",
    )  # fmt: skip
    tfs.add_argument(
        "--model_base_path", "--model-base-path", dest="model_base_path",
        help="TF Serving's one-model mode: the folder (or s3://...) holding <version>/ folders; replaces --store",
    )  # fmt: skip
    tfs.add_argument(
        "--model_name", "--model-name", dest="model_name", help="the name --model_base_path serves (default 'default')"
    )
    tfs.add_argument("--rest_api_port", type=int, dest="http_port", help="TF Serving's spelling of --http-port")
    tfs.add_argument("--port", type=int, dest="grpc_port", help="TF Serving's spelling of --grpc-port")
    p.add_argument("--server-name", help="the name server metadata gives (default tensorgate; triton for its clients)")
    p.add_argument(
        "--memory-budget",
        help="bytes the isolated models' processes may hold together (e.g. 4GiB); beyond it the least recently "
        "used are unloaded and load again on request (README: Isolation and the memory budget)",
    )
    sec = p.add_argument_group("security (README: Security)")
    sec.add_argument("--auth-keys", help="YAML file of SHA-256-hashed API keys with scopes and models; enables auth")
    sec.add_argument(
        "--auth-open", type=lambda v: [g for g in v.split(",") if g],
        help="comma-separated endpoint groups that need no key (default health,metrics; also read, infer, admin)",
    )  # fmt: skip
    sec.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS and gRPC over TLS (re-read on change)")
    sec.add_argument("--tls-key", help="PEM private key of --tls-cert")
    sec.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mTLS)")
    sec.add_argument(
        "--strict-readiness", action=argparse.BooleanOptionalAction, default=None,
        help="ready only when every version the store and policies want is READY (default on)",
    )  # fmt: skip
    sec.add_argument("--exit-on-error", action="store_true", default=None, help="exit 1 if a model fails at startup")
    sec.add_argument("--allow-pickle", action="store_true", default=None, help="load torch archives with pickled parts")
    sec.add_argument(
        "--allow-client-shm", nargs="?", const=True, type=_switch, default=None, metavar="true|false",
        help="let clients register system shared memory regions (Triton's extension and flag; off by default)",
    )  # fmt: skip
    sec.add_argument("--body-timeout", type=float, help="seconds a request body may take to arrive (default 30)")
    sec.add_argument("--header-timeout", type=float, help="seconds a request head may take to arrive (default 10)")


def _switch(value: str) -> bool:
    """A flag's value in Triton's spelling (``--allow-client-shm=true``) or bare (``--allow-client-shm``)."""
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server.process import run
    from gateway.server.settings import Settings
    from gateway.telemetry.logs import setup_logging

    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "func") and v is not None}
    settings = Settings(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    return run(settings)


def _optional(module: str, add: str, run_name: str) -> tuple[Any, Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, add), getattr(mod, run_name)


_SUBCOMMANDS = (
    ("export", "gateway.cli.export", "add_export_arguments", "run_export", "export a model into every format"),
    ("verify", "gateway.cli.verify", "add_verify_arguments", "run_verify", "check every variant vs golden samples"),
    (
        "bench",
        "gateway.cli.bench.command",
        "add_bench_arguments",
        "run_bench",
        "compare variants under load vs their SLA",
    ),
    ("demo", "gateway.cli.demo", "add_demo_arguments", "run_demo", "build the bundled demo store"),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only ``command``'s module is imported (all of them when None), so ``serve`` stays lean."""
    parser = argparse.ArgumentParser(prog="tensorgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tensorgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model store over V2 REST/gRPC and the TF Serving APIs")
    _serve_args(serve)
    serve.set_defaults(func=_cmd_serve)
    for name, module, add, run_name, text in _SUBCOMMANDS:
        p = sub.add_parser(name, help=text)
        if command is not None and command != name:
            continue
        hooks = _optional(module, add, run_name)
        if hooks is None:
            p.set_defaults(func=lambda _args, n=name: _missing(n))
            continue
        hooks[0](p)
        p.set_defaults(func=hooks[1])
    return parser


def _missing(name: str) -> int:
    print(f"tensorgate {name} is not available in this installation", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    known = {"serve", *(c[0] for c in _SUBCOMMANDS)}
    args = build_parser(command if command in known else None).parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
