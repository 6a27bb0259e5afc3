"""The serve command line: TF Serving's flag spellings land on the same settings as tensorgate's own."""

from __future__ import annotations

from gateway.cli.main import build_parser
from gateway.server.settings import Settings


def settings(*argv: str) -> Settings:
    args = build_parser("serve").parse_args(["serve", *argv])
    return Settings(**{k: v for k, v in vars(args).items() if k not in ("command", "func") and v is not None})


def test_tf_serving_spellings() -> None:
    s = settings(
        "--port=8500", "--rest_api_port=8501", "--model_config_file=/etc/models.config",
        "--model_config_file_poll_wait_seconds=60",
    )  # fmt: skip
    assert (s.grpc_port, s.http_port) == (8500, 8501)
    assert (s.model_config_file, s.model_config_file_poll_wait_seconds) == ("/etc/models.config", 60.0)
    one = settings("--model_name", "resnet", "--model_base_path", "s3://bucket/models/resnet")
    assert (one.model_name, one.model_base_path) == ("resnet", "s3://bucket/models/resnet")
    assert settings("--model-config-file", "a.config").model_config_file == "a.config"
    assert settings("--port-file", "p.json").port_file == "p.json"


def test_metrics_compat() -> None:
    assert settings().metrics_compat == "none"
    assert settings("--metrics-compat", "triton").metrics_compat == "triton"
