"""File events (Linux inotify, through ctypes) to notice repository changes before the next poll.

Polling stays the source of truth (inotify does not see changes made by other NFS clients); events
only make the controller look sooner. One event is also decisive: a version folder *moved into*
a model folder (``IN_MOVED_TO``) arrived complete, so it need not wait a poll interval to settle.
Where inotify is missing (macOS, some containers) ``FileEvents.open()`` returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileEvent", "FileEvents"]

IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_ISDIR = 0x40000000
_MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class FileEvent:
    """Something changed at ``path`` (a direct child of a watched folder, or the folder itself)."""

    path: Path
    mask: int

    @property
    def moved_in(self) -> bool:
        return bool(self.mask & IN_MOVED_TO)


class FileEvents:
    """An inotify instance watching folders (not recursive: the controller watches each model folder)."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc, self.fd = libc, fd
        self._folders: dict[int, Path] = {}
        self._watched: set[Path] = set()

    @classmethod
    def open(cls) -> FileEvents | None:
        """A new instance, or None where inotify is not available."""
        name = ctypes.util.find_library("c")
        if name is None:
            return None
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(libc, fd) if fd >= 0 else None

    def watch(self, folder: Path) -> bool:
        """Watch ``folder``'s direct children; False if it cannot be watched (it then relies on polling)."""
        if folder in self._watched:
            return True
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), _MASK)
        if wd < 0:
            return False
        self._folders[wd] = folder
        self._watched.add(folder)
        return True

    def read(self) -> list[FileEvent]:
        """Events queued so far (non-blocking)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size: offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            folder = self._folders.get(wd)
            if folder is None:
                continue
            if mask & IN_DELETE_SELF:
                self._folders.pop(wd, None)
                self._watched.discard(folder)
            events.append(FileEvent(folder / os.fsdecode(raw) if raw else folder, mask))
        return events

    def close(self) -> None:
        os.close(self.fd)
