"""Writing files so that nothing is ever lost: atomic replacement, and destinations checked first.

`atomic_write(path, data)` never leaves a half-written file where the old one was: the bytes go
to a file with no name in the destination's folder (Linux `O_TMPFILE`), are flushed and
fsync'ed, then get a unique hidden temporary name, and that name atomically replaces `path`
(`os.replace`), after which the folder is fsync'ed too. A process killed while writing (even by
SIGKILL) leaves the old file as it was and no file at all: the kernel drops an unnamed file with
its last descriptor. Where unnamed files are not available the bytes go straight to the hidden
name, and a later write to the same path removes what a dead writer left. Two writers racing to
the same path each replace it whole (the last one wins); a symbolic link keeps pointing where it
pointed, and its target is what gets replaced.

`check_output_file(path, flag)` and `check_output_dir(path, flag)` say, before any work starts,
why a destination could not be written (a missing folder, an unwritable one, a directory where
a file is wanted), as one `OutputError` naming the command-line flag.
"""
from __future__ import annotations

import errno
import json
import os
import secrets

TEMP_SUFFIX = ".sparsenet-tmp"


class OutputError(ValueError):
    """An output destination that cannot be written."""


def _resolve(path) -> str:
    """The file a write to `path` lands in: symbolic links followed (a dangling one too)."""
    return os.path.realpath(os.fspath(path))


def _temporary_name(target: str) -> str:
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _remove_stale(target: str) -> None:
    """Delete temporary files of `target` whose writer is dead (killed between naming the
    finished file and the replace, or on a system without O_TMPFILE)."""
    folder, name = os.path.split(target)
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX)):
            continue
        pid = entry[len(prefix):-len(TEMP_SUFFIX)].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                   # someone else's process: alive
        return True
    return True


_unnamed_fails = set()       # devices where an unnamed file could not be given a name


def _link_unnamed(fd: int, temp: str) -> None:
    """Give the unnamed file `fd` the name `temp`: through /proc (any user), or linkat with
    AT_EMPTY_PATH (where /proc cannot, for a privileged process)."""
    try:
        os.link(f"/proc/self/fd/{fd}", temp, follow_symlinks=True)
        return
    except OSError as err:
        first = err
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_empty_path = -100, 0x1000
    if libc.linkat(fd, b"", at_fdcwd, os.fsencode(temp), at_empty_path) != 0:
        raise first


def _write_unnamed(folder: str, temp: str, data) -> bool:
    """Write `data` to a file with no name (O_TMPFILE), then name it `temp`. False where the
    system cannot (nothing is left behind then)."""
    flag = getattr(os, "O_TMPFILE", None)
    device = os.stat(folder).st_dev
    if flag is None or device in _unnamed_fails:
        return False
    try:
        fd = os.open(folder, flag | os.O_WRONLY, 0o644)
    except OSError:
        _unnamed_fails.add(device)
        return False
    try:
        _write_all(fd, data)
        os.fsync(fd)
        try:
            _link_unnamed(fd, temp)
        except (OSError, AttributeError):
            _unnamed_fails.add(device)
            return False
    finally:
        os.close(fd)
    return True


def _write_named(temp: str, data, mode: int) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                            # some systems cannot open a folder: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data: bytes, mode: int = 0o644) -> None:
    """Replace the file at `path` by `data` atomically (see the module docstring)."""
    target = _resolve(path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", os.fspath(path))
    _remove_stale(target)
    temp = _temporary_name(target)
    try:
        if not _write_unnamed(folder, temp, data):
            _write_named(temp, data, mode)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def unnamed_files_supported(folder) -> bool:
    """True where `atomic_write` writes through an unnamed file in `folder` (so a killed
    writer leaves no temporary file at all); elsewhere the next write removes it."""
    probe = os.path.join(os.fspath(folder), f".probe.{os.getpid()}{TEMP_SUFFIX}")
    ok = _write_unnamed(os.fspath(folder), probe, b"")
    if ok:
        os.unlink(probe)
    return ok


def atomic_write_json(path, obj, indent=1) -> None:
    """`obj` as JSON, written atomically: a failure leaves the previous file whole."""
    atomic_write(path, (json.dumps(obj, indent=indent) + "\n").encode())


def temporary_files(folder) -> list:
    """Temporary files of `atomic_write` left in `folder` (after a crash without O_TMPFILE)."""
    folder = os.fspath(folder)
    return sorted(n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX))


# ----- destinations checked before any work -----------------------------------------------------
def _check_folder(folder: str, what: str) -> None:
    if not os.path.exists(folder):
        raise OutputError(f"{what}: the folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise OutputError(f"{what}: {folder!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: the folder {folder!r} is not writable")


def check_output_file(path, flag: str) -> None:
    """Raise OutputError unless a file can be written at `path` (used before training)."""
    shown = os.fspath(path)
    what = f"{flag} {shown}"
    if shown == "":
        raise OutputError(f"{flag} needs a file name")
    target = _resolve(path)
    if os.path.isdir(target):
        raise OutputError(f"{what}: is a directory; give a file name")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        # os.replace could still swap it, but the user asked that it stay: say so
        raise OutputError(f"{what}: the file exists and is read-only")
    _check_folder(os.path.dirname(target) or ".", what)


def check_output_dir(path, flag: str) -> None:
    """Raise OutputError unless `path` is, or can be created as, a writable folder."""
    shown = os.fspath(path)
    what = f"{flag} {shown}"
    if shown == "":
        raise OutputError(f"{flag} needs a folder name")
    target = _resolve(path)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise OutputError(f"{what}: is a file, not a folder")
        _check_folder(target, what)
    else:
        _check_folder(os.path.dirname(target) or ".", what)
