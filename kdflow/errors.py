"""The project's user-facing exception: stage CLIs turn it into one line and exit 2."""


class KdflowError(Exception):
    """A mistake a user can fix (bad param, missing data, corrupt file); the message says how."""
