"""Generate the reference pages of the documentation from the code itself.

    python tools/docgen.py cli > docs/cli.md     # every command and option of the click tree
    python tools/docgen.py api > docs/api.md     # public Python entry points, from docstrings

Both outputs are deterministic (no terminal width, no memory addresses), so a test can
regenerate them and compare with the committed pages.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from typing import Iterable

import click

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout: document the funcml beside this script
    sys.path.insert(0, str(REPO))

CLI_HEADER = """# CLI reference

Generated from the click commands by `python tools/docgen.py cli > docs/cli.md`; a test
(`tests/test_docs.py`) fails when this page and the code disagree. Every command also answers
`--help`. Metrics go to the last line of stdout as one JSON object with `--json`; progress and
messages go to stderr. Exit codes are listed on the [reliability page](reliability.md).
"""

API_HEADER = """# Python API reference

Generated from the docstrings by `python tools/docgen.py api > docs/api.md`; a test
(`tests/test_docs.py`) fails when this page and the code disagree. Tensor shapes are written as
`(B, C, *spatial)`: B signals, C channels, spatial size 1D `(L,)`, 2D `(H, W)` or 3D `(D, H, W)`.
"""

# Packages whose ``__all__`` is the public API, in page order.
API_PACKAGES = ("funcml.data", "funcml.encoders", "funcml.backends", "funcml.latents", "funcml.io", "funcml.errors", "funcml.estimators")
# Packages without ``__all__``: their public entry points, as "module:name" (skipped when absent).
API_CURATED = {
    "funcml.query": ("funcml.query.render:render_latents", "funcml.query.render:render_to_folder",
                     "funcml.grids:query_grid", "funcml.query.superres:superres_evaluate",
                     "funcml.query.observed:parse_observed", "funcml.query.observed:ObservedMasks",
                     "funcml.query.impute:impute_evaluate", "funcml.encoders.multires:MultiResConfig",
                     "funcml.query.head:QueryHeadConfig", "funcml.query.head:QueryHead",
                     "funcml.query.estimator:QueryEstimator", "funcml.query.estimator:QueryRegressor",
                     "funcml.query.fit:HeadTraining", "funcml.query.pairs:downsampled_pairs",
                     "funcml.query.pairs:paired_pairs", "funcml.query.pairs:masked_pairs",
                     "funcml.query.pixel_sr:PixelSR"),
    "funcml.tasks.segment": ("funcml.tasks.segment.segmenter:QuerySegmenter",
                             "funcml.tasks.segment.unet:UNetSegmenter",
                             "funcml.tasks.segment.metrics:segmentation_report"),
    "funcml.demo": ("funcml.demo:run_demo", "funcml.demo:DemoContext"),
}

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ANNOTATION = re.compile(r"(: |-> )'([^']*)'")  # postponed annotations print quoted


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _param_names(p: click.Parameter) -> str:
    if isinstance(p, click.Argument):
        return f"`{p.human_readable_name}`"
    names = list(p.opts)
    if getattr(p, "secondary_opts", None):
        names = [f"{a}/{b}" for a, b in zip(p.opts, p.secondary_opts)] if len(p.opts) == len(p.secondary_opts) \
            else names + list(p.secondary_opts)
    return ", ".join(f"`{n}`" for n in names)


def _param_type(p: click.Parameter) -> str:
    if isinstance(p, click.Option) and p.is_flag:
        return "flag"
    t = p.type
    if isinstance(t, click.Choice):
        return " \\| ".join(str(c) for c in t.choices)
    if isinstance(t, (click.IntRange, click.FloatRange)):
        return _md_cell(t._describe_range()) if hasattr(t, "_describe_range") else t.name
    return t.name


def _param_default(p: click.Parameter) -> str:
    if isinstance(p, click.Argument):
        return "required" if p.required else ""
    if p.required:
        return "required"
    d = p.default
    if "Sentinel" in type(d).__name__ or "UNSET" in repr(d):
        return ""
    if callable(d) or d is None or d == () or (p.is_flag and not p.secondary_opts and d is False):
        return ""
    if p.multiple:
        return ""
    if isinstance(d, bool) and p.secondary_opts:
        return f"`{p.opts[0] if d else p.secondary_opts[0]}`"
    return f"`{d}`"


def _command_section(path: list[str], cmd: click.Command, level: int) -> list[str]:
    name = " ".join(path)
    ctx = click.Context(cmd, info_name=name, terminal_width=100, max_content_width=100)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [f"{'#' * level} `{name}`", "", "```", f"{name} {usage}".rstrip(), "```", ""]
    if cmd.help:
        lines += [inspect.cleandoc(cmd.help), ""]
    params = [p for p in cmd.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for p in params:
            help_text = getattr(p, "help", None) or ""
            lines.append(f"| {_param_names(p)} | {_param_type(p)} | {_param_default(p)} | {_md_cell(help_text)} |")
        lines.append("")
    if isinstance(cmd, click.Group):
        for sub_name in sorted(cmd.commands):
            lines += _command_section(path + [sub_name], cmd.commands[sub_name], level + 1)
    return lines


def cli_reference() -> str:
    """Markdown for every command of ``funcml`` (sorted), with usage, help and an options table."""
    from funcml.cli import cli

    lines = [CLI_HEADER, "Commands: " + ", ".join(f"`{n}`" for n in sorted(cli.commands)) + ".", ""]
    ctx = click.Context(cli, info_name="funcml", terminal_width=100, max_content_width=100)
    lines += ["## `funcml`", "", "```", "funcml " + " ".join(cli.collect_usage_pieces(ctx)), "```", "",
              inspect.cleandoc(cli.help or ""), ""]
    for name in sorted(cli.commands):
        lines += _command_section(["funcml", name], cli.commands[name], 2)
    return "\n".join(lines).rstrip() + "\n"


def _signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ANNOTATION.sub(r"\1\2", _ADDRESS.sub("", sig))


_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc):`~?([^`]+)`")


def _doc(obj) -> str:
    """The docstring with reST roles and double backticks turned into Markdown code spans."""
    doc = inspect.getdoc(obj) or ""
    doc = _ROLE.sub(r"`\1`", doc).replace("``", "`")
    return _google_sections(doc).strip()


def _google_sections(doc: str) -> str:
    """Indented ``name: text`` blocks (Args:, Attributes: ...) become Markdown lists; blocks after
    a line ending in ``::`` stay code blocks."""
    out: list[str] = []
    code = False
    for line in doc.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            out.append("")
            continue
        if indent == 0:
            code = False
            if stripped.endswith("::"):
                out += [line[:-1], ""]
                code = True
                continue
            out.append(line)
        elif code:
            out.append(line)
        elif indent <= 4:
            if out and out[-1] and not out[-1].startswith("- "):
                out.append("")
            out.append("- " + stripped)
        else:
            out.append("  " + stripped)
    return "\n".join(out)


def _public_members(cls) -> Iterable[tuple[str, object]]:
    for name, member in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            yield name, member
        elif inspect.isfunction(member):
            yield name, member


def _object_section(module_name: str, name: str, obj) -> list[str]:
    lines: list[str] = []
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        lines += [f"### `{name}`", "", f"*{kind}* `{module_name}.{name}{_signature(obj) if kind == 'class' else ''}`", ""]
        if _doc(obj):
            lines += [_doc(obj), ""]
        for mname, member in _public_members(obj):
            if isinstance(member, property):
                lines += [f"- **`.{mname}`** (property)" + (f": {_md_cell(_doc(member))}" if _doc(member) else "")]
            else:
                sig = _signature(member).replace("(self, ", "(").replace("(self)", "()").replace("(cls, ", "(")
                doc = _doc(member)
                lines += [f"- **`.{mname}{sig}`**" + (f": {_md_cell(doc)}" if doc else "")]
        lines.append("")
    elif callable(obj):
        lines += [f"### `{name}`", "", f"`{module_name}.{name}{_signature(obj)}`", ""]
        if _doc(obj):
            lines += [_doc(obj), ""]
    else:
        lines += [f"### `{name}`", "", f"`{module_name}.{name}` = `{_md_cell(_ADDRESS.sub('', repr(obj)))}`", ""]
    return lines


def api_packages() -> list[str]:
    """The documented packages: :data:`API_PACKAGES` (those importable), every ``funcml.tasks.*``
    package with ``__all__``, then the :data:`API_CURATED` ones that exist."""
    names = [p for p in API_PACKAGES if importlib.util.find_spec(p) is not None]
    import funcml.tasks

    for info in sorted(pkgutil.iter_modules(funcml.tasks.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"funcml.tasks.{info.name}")
        if getattr(mod, "__all__", None):
            names.append(mod.__name__)
    return names + [p for p in API_CURATED if importlib.util.find_spec(p) is not None]


def api_reference() -> str:
    """Markdown for the ``__all__`` of every package in :func:`api_packages` (docstrings verbatim)."""
    lines = [API_HEADER]
    packages = api_packages()
    lines += ["Packages: " + ", ".join(f"[`{p}`](#{p.replace('.', '')})" for p in packages) + ".", ""]
    for pkg in packages:
        mod = importlib.import_module(pkg)
        lines += [f"## `{pkg}`", ""]
        if _doc(mod):
            lines += [_doc(mod), ""]
        if pkg in API_CURATED:
            for entry in API_CURATED[pkg]:
                module_name, name = entry.split(":")
                lines += _object_section(module_name, name, getattr(importlib.import_module(module_name), name))
            continue
        names = getattr(mod, "__all__", None) or [n for n, o in vars(mod).items()
                                                   if not n.startswith("_") and inspect.isclass(o)
                                                   and o.__module__ == mod.__name__]
        for name in names:
            lines += _object_section(pkg, name, getattr(mod, name))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["cli"], ["api"]):
        print("usage: python tools/docgen.py cli|api", file=sys.stderr)
        return 2
    sys.stdout.write(cli_reference() if argv[0] == "cli" else api_reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
