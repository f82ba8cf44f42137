"""The one exception type users see: a one-line message naming the file, row or column and the fix."""


class HardnegError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits with code 2."""
