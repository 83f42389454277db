"""The base of every error meant for the user: the CLI prints its message as one line."""


class HydraEdgeError(Exception):
    """A problem with the user's input, model, board or tools, with a message that says what to do."""
