"""The documentation builds strictly and its generated reference pages match the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from docgen import api_reference, cli_reference, main  # noqa: E402


def test_cli_reference_is_in_sync_with_the_click_commands():
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == cli_reference(), "docs/cli.md is stale: run python tools/docgen.py cli > docs/cli.md"


def test_api_reference_is_in_sync_with_the_docstrings():
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == api_reference(), "docs/api.md is stale: run python tools/docgen.py api > docs/api.md"


def test_cli_reference_lists_every_command_and_option():
    from funcml.cli import cli

    text = cli_reference()
    for name, cmd in cli.commands.items():
        assert f"## `funcml {name}`" in text
        for p in cmd.params:
            for opt in getattr(p, "opts", []):
                if opt.startswith("--"):
                    assert f"`{opt}" in text, (name, opt)


def test_cli_reference_changes_when_an_option_changes(monkeypatch):
    import click

    from funcml.cli import cli

    before = cli_reference()
    cmd = cli.commands["info"]
    monkeypatch.setattr(cmd, "params", [*cmd.params, click.Option(["--brand-new-option"], help="x")])
    assert cli_reference() != before and "`--brand-new-option`" in cli_reference()


def test_generator_entry_point_refuses_unknown_pages(capsys):
    assert main(["nope"]) == 2
    assert "usage" in capsys.readouterr().err


def test_every_page_is_in_the_nav_and_every_image_exists():
    import re

    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and all(p in nav for p in pages), [p for p in pages if p not in nav]
    text = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    shown = set(re.findall(r"\]\((figures/[^)\s]+\.png)\)", text))
    assert shown and all((ROOT / "docs" / f).is_file() for f in shown), [f for f in shown
                                                                          if not (ROOT / "docs" / f).is_file()]
    # The figures of these pages (concepts, examples) are all shown, each next to the command that makes it.
    for png in list((ROOT / "docs" / "figures").glob("concept_*.png")) + list(
            (ROOT / "docs" / "figures").glob("example_*.png")):
        assert f"figures/{png.name}" in shown, f"{png.name} is not shown on any page"
    assert "python docs/figures/make_concepts.py" in (ROOT / "docs" / "concepts.md").read_text()


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is not installed")
def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "concepts" / "index.html").exists()
    assert (tmp_path / "site" / "figures" / "concept_field.png").exists()
