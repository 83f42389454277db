"""Helpers for tests that drive the `hydra-edge` CLI through click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner, Result
from hydra_edge.cli import main


def invoke(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result: Result, *fragments: str) -> str:
    """A failed command that ends with one `error:` line, no traceback, and says each fragment."""
    assert result.exit_code != 0
    text = result.output
    assert "Traceback" not in text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith(("error:", "Error:")), text
    for f in fragments:
        assert f in text, text
    return text
