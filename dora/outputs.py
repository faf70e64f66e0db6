"""Output folders checked and claimed before any work: nothing a user has is overwritten.

``check_output_dir`` refuses, in one line naming the folder and the flag: a path that is a file; a model's folder
(or a folder inside one, or one holding a model given as input); a folder where the command would write over one of
its inputs; a non-empty folder (unless the user says ``overwrite`` or resumes); and a folder that cannot be written
(read-only, full). Nothing is left behind by the check: a folder that does not exist yet is not created.
"""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["OutputError", "check_output_dir", "is_model_folder", "probe_writable"]

MODEL_FILES = ("config.json", "adapter_config.json", "model.safetensors", "pytorch_model.bin",
               "model.safetensors.index.json", "adapter_model.safetensors")  # fmt: skip
PROBE = ".dora-write-check-"  # the prefix of probe_writable's temporary file
RUN_FILES = ("dora_run.json", "trainer_state.json", "training_args.bin")  # an earlier run's output, not a model


class OutputError(ValueError):
    """An output folder that must not (or cannot) be written, reported in one line."""


def _real(path) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def is_model_folder(path) -> bool:
    """A folder holding a model or an adapter (``config.json``, weights, ``adapter_config.json``)."""
    full = _real(path)
    return os.path.isdir(full) and any(os.path.isfile(os.path.join(full, n)) for n in MODEL_FILES)


def _existing_parent(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def probe_writable(path, what: str = "output", need_bytes: int = 0) -> None:
    """An OutputError when ``path`` (a folder, or where it would be created) cannot be written: a file is written
    there and removed (read-only, permission, full disk), and the free space is compared with ``need_bytes``."""
    full = _real(path)
    folder = full if os.path.isdir(full) else _existing_parent(full)
    if not os.path.isdir(folder):
        raise OutputError(f"{what} {str(path)!r}: {folder} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=PROBE) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"{what} {str(path)!r}: cannot write in {folder} ({reason}); choose another folder") from e
    if need_bytes:
        free = shutil.disk_usage(folder).free
        if free < need_bytes:
            raise OutputError(
                f"{what} {str(path)!r}: {free / 2**20:.0f} MiB free in {folder}, and the run needs about "
                f"{need_bytes / 2**20:.0f} MiB; free space or choose another folder"
            )


def check_output_dir(
    path,
    *,
    what: str = "output_dir",
    flag: str = "--overwrite_output_dir",
    overwrite: bool = False,
    resume: bool = False,
    inputs=(),
    models=(),
    writes=(),
    need_bytes: int = 0,
) -> None:
    """Refuse an output folder before any work (one-line OutputError, a ValueError):

    - ``path`` is a file;
    - ``path`` is a model's folder or lies inside one (any folder holding a model; ``models``: the input models'
      paths, also refused when they lie inside ``path`` or ``path`` inside them);
    - an input (``inputs``: paths) is ``path`` itself, or one of the files ``writes`` (names relative to
      ``path``) that the command would write;
    - ``path`` is a non-empty folder, unless ``overwrite`` (the user's ``flag``) or ``resume``;
    - ``path`` cannot be written (see ``probe_writable``).
    """
    if path is None or str(path) == "":
        raise OutputError(f"{what}: no folder given")
    full = _real(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise OutputError(f"{what} {str(path)!r} is a file, not a folder: give a folder")
    for m in models:
        if not m or not os.path.exists(_real(m)):
            continue
        model = _real(m)
        if _inside(full, model) or _inside(model, full):
            raise OutputError(
                f"{what} {str(path)!r} would write into the model {str(m)!r}: choose a folder outside it"
            )
    parent = full
    while True:
        if is_model_folder(parent) and not any(os.path.isfile(os.path.join(parent, n)) for n in RUN_FILES):
            raise OutputError(
                f"{what} {str(path)!r} is inside the model folder {parent}: choose a folder outside it"
            )
        if os.path.dirname(parent) == parent:
            break
        parent = os.path.dirname(parent)
    targets = {_real(os.path.join(full, w)) for w in writes}
    for i in inputs:
        if not i:
            continue
        real = _real(i)
        if real == full or real in targets:
            raise OutputError(f"{what} {str(path)!r} would write over the input {str(i)!r}: choose another folder")
    held = sorted(n for n in os.listdir(full) if not n.startswith(PROBE)) if os.path.isdir(full) else []
    if held and not (overwrite or resume):  # (another process's write check is not a file of the user's)
        shown = held
        listed = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")
        raise OutputError(
            f"{what} {str(path)!r} is not empty ({listed}): choose a new folder, or add {flag} to write into it"
        )
    probe_writable(path, what, need_bytes)
