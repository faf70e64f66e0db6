"""An output folder claimed for the length of a command: checked by ``dora.outputs.check_output_dir`` (not a file,
not a model's folder, never over an input, not an earlier run unless the user says to overwrite it, writable),
created, and removed again if the command fails before writing anything into it."""

from __future__ import annotations

import contextlib
import os
import shutil

from dora.outputs import check_output_dir

__all__ = ["claim_output_dir"]


@contextlib.contextmanager
def claim_output_dir(
    path: str | None,
    *,
    flag: str = "--output",
    overwrite_flag: str = "--overwrite-output-dir",
    overwrite: bool = False,
    writes: tuple[str, ...] = (),
    inputs: tuple = (),
    models: tuple = (),
    refuse_non_empty: bool = True,
):
    """Check ``path`` and create it; on an error inside the ``with`` block, the folders this call created are
    removed again if they are still empty. ``refuse_non_empty=False``: a folder with other files is fine, one
    holding any of ``writes`` is an earlier run (refused unless ``overwrite``)."""
    if not path:
        yield
        return
    full = os.path.realpath(os.path.expanduser(str(path)))
    earlier = [n for n in writes if os.path.exists(os.path.join(full, n))] if os.path.isdir(full) else []
    if not refuse_non_empty and earlier and not overwrite:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise ValueError(f"{flag} {str(path)!r} holds an earlier run ({shown}): choose a new folder, or add "
                         f"{overwrite_flag} to replace its files")  # fmt: skip
    check_output_dir(path, what=flag, flag=overwrite_flag, overwrite=overwrite or not refuse_non_empty,
                     inputs=inputs, models=models, writes=writes)  # fmt: skip
    created, folder = [], full
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(full, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {str(path)!r}: cannot create it ({e.strerror or type(e).__name__})") from None
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first
            if os.path.isdir(folder) and not os.listdir(folder):
                shutil.rmtree(folder, ignore_errors=True)
        raise
