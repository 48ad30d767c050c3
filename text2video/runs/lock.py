"""One training process per run folder: an exclusive ``flock`` on ``RUN/.lock`` for the run's lifetime.

The lock is the kernel's, not the file's: it goes away with the process that held it, however that
process ended (``kill -9`` included), so a lock file left by a dead process never blocks the next run.
The file records the holder's PID, host and start time so that a refused second process can name it.
Within one process the lock is re-entrant (two `Trainer` objects on one folder in one process share it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ..errors import RunFolderError, RunLockedError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"

_held: dict[Path, list[Any]] = {}  # resolved run folder -> [fd, count]
_guard = threading.Lock()


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(run_dir: str | Path) -> str:
    """``PID 1234 on host, since 12:00:01`` for the process recorded in the lock file ('' if none)."""
    info = _holder(Path(run_dir) / LOCK_FILE)
    if not info.get("pid"):
        return ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if info.get("started") else "?"
    return f"PID {info['pid']} on {info.get('host', '?')}, since {since}"


class RunLock:
    """``with RunLock(run_dir):`` or ``acquire()`` / ``release()``; refuses at once when another process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._key: Optional[Path] = None

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> RunLock:
        import fcntl

        if self._key is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"cannot create the run folder {self.run_dir}: {exc.strerror}; choose another --run-dir") from exc
        key = self.run_dir.resolve()
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            path = key / LOCK_FILE
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunFolderError(f"the run folder {self.run_dir} is not writable ({exc.strerror}); choose another --run-dir") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise RunFolderError(f"cannot lock the run folder {self.run_dir}: {exc.strerror}") from exc
                holder = describe_holder(key) or "another process"
                raise RunLockedError(
                    f"the run folder {self.run_dir} is in use by another training process ({holder}); wait for it to "
                    "finish or stop it, or train into another --run-dir"
                ) from None
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            _held[key] = [fd, 1]
            self._key = key
        logger.debug("locked %s", path)
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with _guard:
            entry = _held.get(self._key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    del _held[self._key]
                    os.close(entry[0])  # closing the descriptor drops the flock
            self._key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a Trainer dropped without finishing still lets the folder go
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def holds_lock(run_dir: str | Path) -> bool:
    """Whether this process holds the lock of ``run_dir``."""
    try:
        return Path(run_dir).resolve() in _held
    except OSError:
        return False


__all__ = ["LOCK_FILE", "RunLock", "describe_holder", "holds_lock"]
