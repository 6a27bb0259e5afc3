"""The JSON schema of one model's config (model_store.config.ModelConfig) as the chart's values.schema.json embeds it
for ``models.*``: pydantic's schema with its definitions under ``$defs`` at the schema's root, ``runtime`` limited to
the known formats. ``python -m tests.deploy.model_schema`` rewrites the chart's copy after ModelConfig changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_store.config import ModelConfig
from runtimes import RUNTIMES

SCHEMA = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tensorgate" / "values.schema.json"
PREFIX = "ModelConfig"


def model_config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of one model's config, the definitions it refers to), refs pointing at the values schema root."""
    schema = ModelConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name in defs:
        text = text.replace(f'"#/$defs/{name}"', f'"#/$defs/{PREFIX}{name}"')
    schema = json.loads(text)
    schema["description"] = "One model's config.yaml fields, merged into the store's config field by field."
    schema["properties"]["runtime"] = {"enum": sorted(RUNTIMES), "description": "The model's runtime."}
    renamed = json.loads(json.dumps({f"{PREFIX}{k}": v for k, v in defs.items()}))
    for definition in renamed.values():
        text = json.dumps(definition)
        for name in defs:
            text = text.replace(f'"#/$defs/{name}"', f'"#/$defs/{PREFIX}{name}"')
        definition.clear()
        definition.update(json.loads(text))
    return schema, renamed


def write() -> None:
    values = json.loads(SCHEMA.read_text())
    schema, defs = model_config_schema()
    values["properties"]["models"]["additionalProperties"] = schema
    values["$defs"] = {**{k: v for k, v in values.get("$defs", {}).items() if not k.startswith(PREFIX)}, **defs}
    SCHEMA.write_text(json.dumps(values, indent=2) + "\n")


if __name__ == "__main__":
    write()
