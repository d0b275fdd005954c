"""Files and directories that appear whole or not at all, with the permissions the umask gives.

A writer builds its result under a temporary name beside the target (`staging_dir`, or a
`.NAME.tmp` file), flushes it, and renames it into place: a reader, or a writer killed half-way,
never leaves a half-written file under the real name. On Linux a directory replaces another in
one atomic `renameat2(RENAME_EXCHANGE)`; elsewhere in two renames, the previous directory set aside
first and put back by `clean_stale` if a kill lands between them.

`tempfile` creates files 0600 and directories 0700 whatever the umask; `follow_umask` gives them
the mode `open()` / `mkdir()` would have, so outputs are shared like any other tool's.

`os_reason` and `check_writable` turn an OSError into the reason a message should give; the bundle
writer, `routerdb rescore` and `training.fit` word their errors with them.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

ASIDE = "bundle"  # a portable swap sets the previous directory aside under this name (kept for old leftovers)
_STALE = re.compile(r"\.(tmp|old)-(\d+)-[^/]+")
_UMASK_LOCK = threading.Lock()


# --- messages -----------------------------------------------------------------------------------


def os_reason(exc: OSError) -> str:
    """The reason to print for `exc`: its strerror, or what a mkdir on a path below a file means."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "a part of the path is a file, not a directory"
    return exc.strerror or str(exc)


def check_writable(folder: Path) -> None:
    """Create `folder` (and its parents) and prove a file can be created in it; raises OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=folder).close()


# --- permissions ------------------------------------------------------------------------------


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # set and restore at once; other threads creating files meanwhile are unlikely
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a file or directory made by `tempfile` the mode `open()` / `mkdir()` would have given."""
    full = 0o777 if path.is_dir() else 0o666
    os.chmod(path, full & ~current_umask())


# --- files ----------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` through `.NAME.tmp` and a rename: readers see the old text or the new, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave the empty temporary file behind
        raise


def fsync_tree(directory: Path) -> None:
    """Flush a directory's files and entries to disk (a power cut then keeps one version or the other)."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
    if os.name == "posix":  # the directory entries too; Windows cannot open a directory this way
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:  # some filesystems refuse fsync on a directory; the files are flushed
            pass
        finally:
            os.close(fd)


# --- directories ------------------------------------------------------------------------------


def staging_dir(target: Path, kind: str = "tmp") -> Path:
    """A new empty `.NAME.KIND-PID-xxxx` directory beside `target`, with the umask's permissions
    (it becomes the target: mkdtemp's 0700 would make a bundle unreadable to everyone else)."""
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))
    follow_umask(path)
    return path


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory `new` at `target`, replacing what is there in one step if possible."""
    if not target.exists():
        os.replace(new, target)
        return
    if exchange(new, target):  # Linux: one atomic step, no moment without a directory
        shutil.rmtree(new, ignore_errors=True)  # now holds the previous directory
        return
    old = staging_dir(target, "old")
    os.replace(target, old / ASIDE)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old / ASIDE, target)  # put the previous directory back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically with renameat2(RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, or another libc
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def clean_stale(target: Path) -> None:
    """Remove what writers killed mid-way left beside `target`; restore a directory a kill left aside."""
    for entry in target.parent.glob(f".{glob.escape(target.name)}.*-*"):
        match = _STALE.fullmatch(entry.name[len(target.name) + 1:])
        if match is None or pid_alive(int(match.group(2))):
            continue  # not ours, or another writer at work
        aside = entry / ASIDE
        if match.group(1) == "old" and aside.is_dir() and not target.exists():
            log.warning("restoring the previous %s that an interrupted write left aside", target)
            os.replace(aside, target)
        shutil.rmtree(entry, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (True where that cannot be told: nothing of it is removed)."""
    if os.name != "posix":  # os.kill(pid, 0) is no probe on Windows: keep every leftover there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
