"""The documentation cannot drift from what it documents: the configuration reference is the
schema's, README's headline table is a generated page's, and every relative link resolves."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from varprune.app.cli import main as cli_main
from varprune.app.configdocs import BEGIN, END, load_schema, reference_table, render_page

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
CONFIG_PAGE = REPO / "docs" / "configuration.md"
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _generated_part(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_configuration_page_is_the_schema():
    """docs/configuration.md's reference is what `varprune config-docs` writes from the schema
    (rerun it after editing config/schema.yaml)."""
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    assert page == render_page(page, load_schema(SCHEMA)), "run `varprune config-docs`, commit the page"


def test_a_changed_default_changes_the_reference():
    """The check above can fail: a default edited in the schema no longer matches the page."""
    schema = load_schema(SCHEMA)
    edited = copy.deepcopy(schema)
    edited["properties"]["train"]["properties"]["epochs"]["default"] = 21
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    assert "| `train.epochs` | integer | `20` |" in _generated_part(page)
    assert "| `train.epochs` | integer | `21` |" in reference_table(edited)
    assert render_page(page, edited) != page


def test_every_key_of_the_default_config_is_documented():
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    table = reference_table(load_schema(SCHEMA))

    def keys(node: dict, prefix: str = ""):
        for name, value in node.items():
            yield f"{prefix}{name}"
            if isinstance(value, dict) and value:
                yield from keys(value, f"{prefix}{name}.")

    missing = [k for k in keys(config) if f"| `{k}` |" not in table and not k.startswith("resources.rules.")]
    assert not missing, f"keys of config/config.yaml missing from the reference: {missing}"


def test_config_docs_command_rewrites_only_the_generated_part(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(f"# Intro\n\nprose\n\n{BEGIN}\nstale\n{END}\n\nafter\n", encoding="utf-8")
    assert cli_main(["config-docs", str(page), "--schema", str(SCHEMA)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Intro\n\nprose\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "stale" not in text and "| `run` | string |" in text


def test_config_docs_refuses_a_page_without_markers(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# no markers\n", encoding="utf-8")
    assert cli_main(["config-docs", str(page), "--schema", str(SCHEMA)]) == 1
    assert "markers" in capsys.readouterr().err and page.read_text() == "# no markers\n"


def test_readme_is_a_front_door_whose_headline_is_generated():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    after_marker = text.split("<!-- headline:", 1)[1].split("-->", 1)[1]
    headline = after_marker.split("<!-- end of headline -->", 1)[0].strip()
    source = re.search(r"\(docs/results/(default-[0-9-]+\.md)\)", headline)
    assert source, "the headline names the generated page it comes from"
    page = (REPO / "docs" / "results" / source.group(1)).read_text(encoding="utf-8")
    table = "\n".join(line for line in headline.splitlines() if line.startswith("|"))
    assert table and table in page, "README's headline table is not the page's verbatim"


@pytest.mark.parametrize("doc", [README, *sorted((REPO / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    broken = [target for target in LINK.findall(doc.read_text(encoding="utf-8"))
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files {broken}"
