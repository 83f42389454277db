"""The one error type of the frontends: a model file or module we cannot read."""

from __future__ import annotations

from ..errors import HydraEdgeError


class FrontendError(HydraEdgeError):
    """A one-line, user-facing message that names the file and says what to do."""
