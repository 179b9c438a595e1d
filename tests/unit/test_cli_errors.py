"""One-line errors print the message as it is: text from the user or a system is never read as Rich markup."""

from __future__ import annotations

import pytest
import typer

from durable_chaos.cli.errors import EXIT_BAD_INPUT, fail


@pytest.mark.parametrize("message", ["process [patroni] not found", "groups=[bold]a|b[/]", "value [/] closes"])
def test_fail_prints_brackets_as_typed_and_exits_with_the_code(capsys, message):
    with pytest.raises(typer.Exit) as exit_:
        fail(EXIT_BAD_INPUT, message)
    assert exit_.value.exit_code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"error: {message}"
