"""Write outputs atomically: a temp file beside the target, renamed into place only on success,
so a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from foleyscope.errors import FoleyscopeError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early, in one line, on an output path that can never be written (before minutes of work)."""
    target = Path(path)
    if target.is_dir():
        raise FoleyscopeError(f"{target}: is a folder; give a file name")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FoleyscopeError(f"{target}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FoleyscopeError(f"{target}: cannot write in {parent}")
            break
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path with the same suffix as `path` (muxers pick the format from it)."""
    target = check_output_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    except OSError as exc:
        raise FoleyscopeError(f"{target}: cannot create ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes it 0600; outputs get the usual permissions
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise FoleyscopeError(f"{target}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp_path.unlink(missing_ok=True)
