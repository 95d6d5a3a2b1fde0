"""The project's user-facing exception: stage CLIs turn it into one line and exit 2."""


class KdflowError(Exception):
    """A mistake a user can fix (bad param, missing data, corrupt file); the message says how."""


def not_a_folder(path: object) -> str:
    """Return why `path` is no folder: 'is a file, not a folder' or 'does not exist'."""
    from pathlib import Path

    target = Path(str(path))
    if target.exists() and not target.is_dir():
        return "is a file, not a folder"
    return "does not exist"
