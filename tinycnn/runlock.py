"""A run owns its folder for its whole life: an exclusive lock file ``run.lock`` inside it.

Two ``tinycnn train`` runs into the same folder (started together, or a second one while the first
runs, or a ``--resume`` of a run that is still going) would overwrite each other's checkpoints and leave
a folder mixing two runs. :class:`RunLock` prevents that:

* it opens ``<folder>/run.lock`` and takes an exclusive, non-blocking ``flock`` on it; the operating
  system releases that lock when the process ends in any way (even ``kill -9``), so a lock is never
  left behind by a killed run;
* the holder writes its pid, host and start time into the file, so the refusal names who holds it;
* a ``run.lock`` file that nobody holds (left by a run that was killed) is detected, reported in the
  ``note`` attribute, and taken over;
* on a normal exit the file is removed.

Used by :func:`tinycnn.run.run_training` (also for ``--resume``)::

    with RunLock(out_dir):
        ...train...
"""
import json
import os
import pathlib
import socket
import time

try:
    import fcntl
except ImportError:         # not POSIX: no locking (documented in the README)
    fcntl = None

LOCK_FILE = "run.lock"


class RunFolderBusy(ValueError):
    """The run folder is locked by another living run."""


class RunLock:
    """Exclusive ownership of a run folder (see the module docstring).

    Parameters
    ----------
    folder : str or pathlib.Path
        Created if missing.

    Attributes
    ----------
    note : str or None
        Set when a stale lock (from a killed run) was found and taken over: names its former holder.
    """

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.path = self.folder / LOCK_FILE
        self.note = None
        self._fd = None

    def acquire(self):
        """Take the lock, or raise :class:`RunFolderBusy` naming the folder and the holder."""
        if fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise RunFolderBusy(f"{self.folder} is in use by another run ({holder}); wait for it to end or "
                                    f"choose another folder") from None
            # the holder we waited on may have removed the file after we opened it: lock the file at the path
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous:
            self.note = f"{self.path} was left by a run that no longer runs ({_describe(previous)}); taken over"
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self):
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)        # while still holding it: a waiting opener re-checks the path
        except FileNotFoundError:
            pass
        os.close(self._fd)              # closing releases the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _read_holder(fd):
    """The holder record written in the lock file, or ``{}`` (empty or unreadable file)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {"unreadable": True}
    return holder if isinstance(holder, dict) else {"unreadable": True}


def _describe(holder):
    if not holder or "pid" not in holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _same_file(fd, path):
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
