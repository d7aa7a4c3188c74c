"""Files that are never torn: atomic writes, content digests, the cache folder.

Every file lnlkit writes (result files, checkpoints, cached stage artefacts, noise archives)
goes through :func:`atomic_write`: the content is written to a uniquely named temporary file
in the destination folder, flushed to disk, then moved over the destination with
``os.replace``. A reader sees the old file or the new one, never half of one; two processes
writing the same file at once do not collide; a crash leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """``$LNLKIT_CACHE``, default ``~/.cache/lnlkit``: decoded data, stage artefacts, cached runs."""
    path = Path(os.environ.get("LNLKIT_CACHE", Path.home() / ".cache" / "lnlkit"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"the cache folder {path} cannot be created ({error.strerror or error}); "
                              "point LNLKIT_CACHE at a writable folder") from None
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; when the block ends without error, move it onto ``path``.

    ``suffix`` keeps a file extension on the temporary name for writers that add one
    (``np.savez`` appends ``.npz`` to names without it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(handle)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush to disk before the rename, so a crash keeps old or new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:  # name the file the user asked for, not the temporary one
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | Path, what: str, fix: str) -> Path:
    """Create ``folder`` if needed and make sure a file can be written there, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(f"the {what} {folder} is not writable ({error.strerror or error}); {fix}") from None
    return folder


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def digest(*parts, length: int = 16) -> str:
    """A short sha256 of numpy arrays, bytes, strings and JSON-serialisable values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part)
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(part.data)
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]


_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """A digest of lnlkit's source files: cached artefacts are rebuilt whenever the code changes."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        files = sorted(PACKAGE_DIR.rglob("*.py")) + [PACKAGE_DIR / "paper_numbers.json"]
        _CODE_DIGEST = digest(*[p.relative_to(PACKAGE_DIR).as_posix().encode() + p.read_bytes() for p in files])
    return _CODE_DIGEST
