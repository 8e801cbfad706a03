"""The ``funcml`` command line (click). Each command lives in its own module."""

from __future__ import annotations

import os
import sys

import click

from funcml import __version__, environment
from funcml.errors import FuncmlError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="funcml")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar=environment.THREADS,
              help="CPU threads for torch in this command (default: torch's choice; env FUNCML_THREADS).")
def cli(threads: int | None) -> None:
    """funcml: medical signals as neural fields (MedFuncta) and machine learning on their latents.

    Typical flow: `funcml train DATA --preset cpu-image --out MODEL`, then
    `funcml encode DATA --model MODEL --out LATENTS`, then tasks on LATENTS
    (`funcml classify --latents LATENTS`, ...). `funcml demo` runs all of it on embedded data.
    """
    if threads is not None:  # the command owns its process: set once here, never by library calls
        import torch

        torch.set_num_threads(threads)


def _register() -> None:
    from funcml.cli import datasets, demo, encode, evaluate, import_mednf, info, presets, train

    for module in (train, encode, evaluate, info, import_mednf, presets, datasets, demo):
        module.register(cli)
    from funcml.cli import tasks

    tasks.register(cli)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors end with one ``error:`` line and a non-zero exit, not a traceback."""
    if argv is None:  # a real command line: the process belongs to funcml (see funcml.allocator)
        from funcml.allocator import reexec_with_tcmalloc, tune_glibc_malloc

        reexec_with_tcmalloc()  # FUNCML_TCMALLOC=1
        tune_glibc_malloc()  # unless FUNCML_MALLOC_TUNE=0
    try:
        code = cli.main(args=argv, prog_name="funcml", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click turns Ctrl-C (KeyboardInterrupt) into Abort
        click.echo("interrupted (rerun the same command to resume where it can)", err=True)
        sys.exit(130)
    except FuncmlError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted (rerun the same command to resume where it can)", err=True)
        sys.exit(130)
    except MemoryError:
        click.echo("error: out of memory (try a smaller --batch-size or --micro-batch-size)", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a bug, not a user error: one line, the traceback in a file
        if environment.debug():
            raise
        click.echo(f"error: internal error ({type(exc).__name__}: {str(exc)[:300]}); this is a bug in funcml. "
                   f"{_save_traceback()}", err=True)
        sys.exit(INTERNAL_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


INTERNAL_ERROR = 70  # EX_SOFTWARE


def _save_traceback() -> str:
    """Write the current traceback to a temporary file; return a hint naming it."""
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="funcml-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"funcml {__version__}\n{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
        return f"The traceback is in {path} (set FUNCML_DEBUG=1 to print it); please report it."
    except OSError:
        return "Set FUNCML_DEBUG=1 to see the traceback; please report it."
