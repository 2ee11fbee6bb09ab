"""The toolkit's own run-time error: what a driver reports in one ``error:`` line (with ``ValueError`` for bad input
and settings); any other ``RuntimeError`` (a CUDA failure, a bug) keeps its traceback."""


class ToolkitError(RuntimeError):
    """A failure the toolkit understood and explains in its message (the file, what happened, what to do)."""
