"""Exit codes and one-line errors, which every command shares. Kept apart from common.py (Temporal's client, the
worker and its activities: over a second to import) so that `check`, which reads a file, starts in half a second.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # Typer 0.2x carries a Click of its own: its errors are not the installed click's
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Docker hosts (a worker per host; 4 and 5 are a run's: not restored, inconclusive). A host with no worker polling
# now is EXIT_INFRA: start one there. These are the user's to fix, each its own way:
EXIT_UNKNOWN_HOST = 6  # no worker has ever served a host of that name (a typo?)
EXIT_HOST_ENGINE_CHANGED = 7  # worker.py --host NAME on an engine other than the one NAME was first seen with
EXIT_FOLDER_NOT_ON_HOST = 8  # a subject folder the host's worker does not have on its search path
EXIT_SUBJECT_NOT_ALLOWED = 9  # a subject the host's worker is not configured to serve

err_console = Console(stderr=True)


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr and exit `code`. The message is printed as written: it often quotes the user's input or a
    system's answer, whose brackets Rich would otherwise read as markup and drop."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """Click answers a bad option value, an unknown option or command with the usage line, a hint and the error on
    four lines; ours are one line (exit 2, as Click's), which names the help instead."""
    try:
        yield
    except click_errors.UsageError as err:
        # Asked for help by giving no arguments (Click >= 8.2 raises it as a usage error): the help is the answer.
        if isinstance(err, getattr(click_errors, "NoArgsIsHelpError", ())):
            raise
        where = f" (see `{err.ctx.command_path} --help`)" if err.ctx else ""
        fail(EXIT_BAD_INPUT, err.format_message().rstrip(".") + where)


class OneLineErrors(TyperGroup):
    """Every command runs inside the top-level group's invoke (a subcommand's options are parsed there too), and
    the group's own options in its make_context: between them they see every usage error."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)
