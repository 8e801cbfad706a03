"""Project checks: no tracked file names a path of one particular machine, the user docs speak about
the software (not about how the work was organised), and the library never imports the CLI."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A data, scratch or home folder of one machine: the work folder, a home folder, root's home. Written
# in pieces so that this file does not name them itself.
WORK, HOME, ROOT_HOME = "/" "work/", "/" "home/", "/" "root/"
MACHINE_PATH = re.compile(rf"(^|[^\w.]){WORK}|{HOME}[a-z]|{ROOT_HOME}")
# Words of a work diary, not of software documentation.
DIARY = re.compile(r"\b(sessions?|the lead|engineers?|coordinator|worktrees?|(this|the) issue|"
                   r"issue \d+|yesterday|today|last week|we (tried|ran|measured))\b", re.IGNORECASE)
USER_DOCS = ["README.md", "CHANGELOG.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def machine_paths(text: str) -> list[str]:
    """The lines of ``text`` that name a machine-specific absolute path."""
    return [line.strip()[:160] for line in text.splitlines() if MACHINE_PATH.search(line)]


def test_no_tracked_file_names_a_path_of_one_machine():
    found = {}
    for path in tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (images, npz)
            continue
        hits = machine_paths(data.decode("utf-8", errors="replace"))
        if hits:
            found[str(path.relative_to(ROOT))] = hits[:3]
    assert not found, f"machine paths (pass data as arguments, see benchmarks/results.py:shared_data): {found}"


@pytest.mark.parametrize("text, bad", [
    ("see {W}shared/data/x.npz", True), ("D={W}artifacts", True), ("`{H}alice/data`", True),
    ("cd {R}funcml", True), ("../shared/data", False), ("~/.funcml/data and /tmp/medfuncta", False),
    ("the network{W}ratio", False), ("https://example.org{W}x", False), ("a.work/b", False),
])
def test_the_machine_path_pattern(text, bad):
    assert bool(machine_paths(text.format(W=WORK, H=HOME, R=ROOT_HOME))) == bad


def test_user_docs_speak_about_the_software_not_about_the_work():
    found = {}
    for name in USER_DOCS:
        text = (ROOT / name).read_text(encoding="utf-8")
        hits = [m.group(0) for m in DIARY.finditer(text)]
        if hits:
            found[name] = sorted(set(hits))
    assert not found, found


def test_the_library_never_imports_the_cli():
    offenders = []
    for path in sorted((ROOT / "funcml").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("funcml", "cli") or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}:{node.lineno} {n}" for n in names if n == "funcml.cli" or n.startswith("funcml.cli.")]
    assert not offenders, offenders
