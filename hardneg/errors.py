"""The one exception type users see: a one-line message naming the file, row or column and the fix."""


class HardnegError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits with code 2."""


class AlreadyFinished(Exception):
    """A shard started on a stage that the other shards already finished with the same config and inputs (a requeued
    array job): nothing to do. The CLI prints it as one line and exits with code 0."""
