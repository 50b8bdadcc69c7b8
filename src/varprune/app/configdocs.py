"""The configuration reference in docs/, written from config/schema.yaml so that it cannot drift.

The schema is the one place a key's type, default and meaning are stated (Snakemake validates
every config against it and fills its defaults). `reference_table` turns it into one Markdown
row per key; `update_page` rewrites the part of a page between the two markers and leaves the
prose around them alone. A test regenerates the table and compares it with docs/configuration.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from varprune.core.atomic import write_text

BEGIN = "<!-- generated from config/schema.yaml by `varprune config-docs`: do not edit below -->"
END = "<!-- end of the generated reference -->"


def _type(node: dict) -> str:
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    words = [k for k in kinds if k]
    if "enum" in node:
        return " | ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if words == ["array"] and isinstance(node.get("items"), dict) and "type" in node["items"]:
        return f"array of {_type(node['items'])}"
    return ", ".join(words) or "any"


def _default(node: dict) -> str:
    if "default" not in node:
        return "(required)"
    value = node["default"]
    if value == {} and node.get("type") == "object":
        return ""
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def schema_rows(schema: dict, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key, depth first in the schema's order; an
    object with its own properties gives a row (its description) and then its keys."""
    for name, node in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        has_keys = node.get("type") == "object" and "properties" in node
        kind = "section" if has_keys else _type(node)
        yield key, kind, _default(node) if not has_keys else "", node.get("description", "")
        if has_keys:
            yield from schema_rows(node, prefix=f"{key}.")


def reference_table(schema: dict) -> str:
    """The Markdown table of every key of `schema`."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, kind, default, description in schema_rows(schema):
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(lines) + "\n"


def _resolved(node, root: dict):
    """`node` with the properties of the `$defs` its `allOf` refers to merged in after its own,
    at every level (train and finetune share `$defs/optimisation`)."""
    if not isinstance(node, dict):
        return node
    shared = {}
    for part in node.get("allOf", []):
        ref = part.get("$ref", "")
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"config schema: only allOf references to #/$defs/ are read, not {ref!r}")
        shared.update(root["$defs"][ref.removeprefix("#/$defs/")].get("properties", {}))
    out = {key: value for key, value in node.items() if key != "allOf"}
    if "properties" in node or shared:
        merged = {**node.get("properties", {}), **shared}
        out["properties"] = {key: _resolved(value, root) for key, value in merged.items()}
    return out


def resolved_schema(schema: dict) -> dict:
    """The schema with every section's keys in its own `properties` (the `$defs` blocks it refers
    to merged in): what the docs and the tests of defaults walk."""
    return _resolved({key: value for key, value in schema.items() if key != "$defs"}, schema)


def load_schema(path: str | os.PathLike) -> dict:
    """config/schema.yaml, resolved (resolved_schema)."""
    return resolved_schema(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def render_page(page_text: str, schema: dict, page_name: str = "the page") -> str:
    """`page_text` with the part between BEGIN and END replaced by the reference table."""
    if BEGIN not in page_text or END not in page_text:
        raise ValueError(f"{page_name}: the markers of the generated reference are missing "
                         f"({BEGIN!r} ... {END!r})")
    head, rest = page_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{reference_table(schema)}\n{END}{tail}"


def update_page(page: str | os.PathLike, schema_path: str | os.PathLike) -> bool:
    """Rewrite `page`'s generated reference from `schema_path`; True when the text changed."""
    page = Path(page)
    old = page.read_text(encoding="utf-8")
    new = render_page(old, load_schema(schema_path), str(page))
    if new != old:
        write_text(page, new)
    return new != old
