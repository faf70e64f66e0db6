"""An output folder is checked and claimed before the work starts: never a file, never the model's folder, never a
place whose files are the command's own inputs, never an earlier run unless the user says to overwrite it, and
writable (a read-only or full disk fails here, in one line, not after the work)."""

from __future__ import annotations

import contextlib
import os
import shutil

__all__ = ["claim_output_dir"]


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(
    path: str,
    *,
    flag: str = "--output",
    writes: tuple[str, ...] = (),
    inputs: tuple = (),
    models: tuple = (),
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite-output-dir",
    refuse_non_empty: bool = True,
) -> None:
    """The checks that need no writing. ``writes``: the names the command writes into the folder; ``inputs``:
    the files or folders it reads; ``models``: model folders it reads (nothing is written inside them)."""
    out = _real(path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{flag} {path!r} is a file, not a folder")
    for model in filter(None, models):
        if os.path.isdir(_real(model)) and _inside(out, _real(model)):
            raise ValueError(f"{flag} {path!r} is inside the model folder {model!r}: choose another folder")
    for name in writes:
        target = os.path.join(out, name)
        for given in filter(None, inputs):
            if os.path.exists(_real(given)) and _inside(_real(given), target):
                raise ValueError(f"{flag} {path!r} would overwrite the input {given!r} (it writes {name}): "
                                 "choose another folder")  # fmt: skip
    if overwrite or not os.path.isdir(out):
        return
    held = sorted(os.listdir(out)) if refuse_non_empty else sorted(n for n in writes if os.path.exists(
        os.path.join(out, n)))  # fmt: skip
    if held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ValueError(f"{flag} {path!r} holds an earlier run ({shown}): choose a new folder, or add "
                         f"{overwrite_flag} to replace its files")  # fmt: skip


@contextlib.contextmanager
def claim_output_dir(path: str | None, **checks):
    """Check ``path`` (see ``check_output_dir``), create it and write a probe file there; on an error inside the
    ``with`` block, the folders this call created are removed again if they are still empty."""
    if not path:
        yield
        return
    check_output_dir(path, **checks)
    flag = checks.get("flag", "--output")
    created, folder = [], _real(path)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(_real(path), exist_ok=True)
        probe = os.path.join(_real(path), ".dora-write-check")
        try:
            with open(probe, "wb") as f:  # a read-only folder or a full disk fails here
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if os.path.exists(probe):
                os.remove(probe)
    except OSError as e:
        _remove_empty(created)
        raise ValueError(f"{flag} {path!r}: cannot write there ({e.strerror or type(e).__name__})") from None
    try:
        yield
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(created: list[str]) -> None:
    for folder in created:  # deepest first
        if os.path.isdir(folder) and not os.listdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
