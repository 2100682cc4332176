"""A run directory belongs to one ``bench run`` at a time: ``<run>/.lock`` holds the owner's pid and host.

The lock is an advisory ``flock`` on that file, held for the whole run: the kernel drops it when the owner exits
in any way (Ctrl-C, SIGKILL, a crash), so a lock left by a dead process is simply taken over. Where ``flock`` is
not available (not POSIX, or a filesystem without locks) the pid in the file is checked instead: a live process on
this host keeps the run, a dead one's lock is taken over.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from bench.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _refuse(self, holder: str) -> UsageError:
        pid, _, host = holder.partition(" ")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return UsageError(f"{self.dir} is in use by another bench run (pid {pid}{where}); wait for it to finish, or "
                          "choose another --out")

    def acquire(self) -> "RunLock":
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UsageError(f"cannot write to --out {self.dir}: {e.strerror or e}; choose another --out") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise self._refuse(self._holder()) from None
                    self._check_pid()  # no locks on this filesystem: fall back to the pid
            else:  # pragma: no cover
                self._check_pid()
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _check_pid(self) -> None:
        holder = self._holder()
        pid, _, host = holder.partition(" ")
        if pid.isdigit() and int(pid) != os.getpid() and host in ("", socket.gethostname()) and _alive(int(pid)):
            raise self._refuse(holder)

    def release(self) -> None:
        """The file stays (removing it would let a waiting process lock an unlinked file); it is emptied so that the
        pid fallback does not see a stale owner."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
