"""RouteConfig: route.yaml parsing (errors name the field) and the routes formed by exported variants."""

from __future__ import annotations

import pytest

from model_store import ConfigError, ModelConfig
from model_store.route import RouteConfig, auto_routes


def test_a_full_route_yaml_parses() -> None:
    config = RouteConfig.parse(
        "policy: weighted\n"
        "variants: [{model: a, weight: 90}, {model: b, version: 3, weight: 10}]\n"
        "sla: {p99_ms: 20}\nchoice: {explore: 0.1}\nbreaker: {failures: 5}\n"
        "shadow: {model: c, share: 0.2}\n"
    )
    assert config.names == ["a", "b"]
    assert config.variants[1].version == 3
    assert config.sla.targets() == {"p99": 0.02}
    assert config.shadow is not None and config.shadow.share == 0.2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variants: []\n", "variants: List should have at least 1 item"),
        ("policy: fastest\nvariants: [a]\n", "policy: Input should be 'fixed', 'weighted' or 'sla'"),
        ("variants: [a, a]\n", "a listed more than once"),
        ("policy: fixed\nvariant: c\nvariants: [a, b]\n", "variant: 'c' is not one of the variants (a, b)"),
        ("policy: weighted\nvariants: [{model: a, weight: 1}, b]\n", "a weight on every variant, or on none"),
        ("policy: weighted\nvariants: [{model: a, weight: 0}]\n", "the weights add up to 0"),
        ("variants: [a]\nchoice: {explore: 0.9}\n", "choice.explore"),
        ("variants: [a]\nshadow: {model: b, share: 0}\n", "shadow.share"),
        ("variants: [a]\nspeed: 3\n", "speed: Extra inputs are not permitted"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_mistakes_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"r/route\.yaml") as caught:
        RouteConfig.parse(text, where="r/route.yaml")
    assert message in str(caught.value)


def test_exported_variants_form_a_route_per_source_in_runtime_order() -> None:
    configs = {
        "mlp_torch_aoti": ModelConfig(runtime="torch_aoti", source={"model": "mlp"}),
        "mlp_onnx": ModelConfig(runtime="onnx", source={"model": "mlp"}, sla={"p99_ms": 5}),
        "cnn_onnx": ModelConfig(runtime="onnx", source={"model": "cnn"}),
        "cnn_torch_export": ModelConfig(runtime="torch_export", source={"model": "cnn"}),
        "alone_onnx": ModelConfig(runtime="onnx", source={"model": "alone"}),
        "plain": ModelConfig(),
    }
    routes = auto_routes(configs, ["onnx", "torch_export", "torch_aoti", "tf_savedmodel"])
    assert sorted(routes) == ["cnn", "mlp"]
    assert routes["mlp"].names == ["mlp_onnx", "mlp_torch_aoti"]
    assert routes["mlp"].policy == "sla" and routes["mlp"].sla.targets() == {"p99": 0.005}
    assert routes["cnn"].names == ["cnn_onnx", "cnn_torch_export"]
    assert routes["cnn"].policy == "fixed"
