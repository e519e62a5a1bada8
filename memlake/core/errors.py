"""One error type for bad input: the CLI prints its message on one line and exits 2."""


class MemlakeError(Exception):
    """A user-facing error: the message names the file/column/value that is wrong."""
