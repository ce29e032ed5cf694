"""Reading a row's picture from the catalogue's images folder, and nothing else.

A catalogue comes from sellers and partners: its image column is data, not a path to trust. Every
reference is resolved **inside** the images folder, or refused with a reason that says nothing of
what lies outside it:

- a plain file name only: no absolute path, no ``..`` component, no scheme (``gs://``), no NUL byte;
- on a local filesystem, the real path (symlinks resolved) must stay inside the images folder, and
  the file must be a regular file (a FIFO would block, ``/dev/zero`` would never end): it is opened
  with ``O_NOFOLLOW | O_NONBLOCK`` and checked on the open descriptor, so it cannot be swapped
  between the check and the read;
- at most ``max_bytes`` are read (a larger file is refused, not read);
- bytes are read as they are: no decompression by file extension (Beam's filesystems would expand
  ``x.gz`` / ``.bz2`` / ``.xz`` / ``.zst`` before any size check; here they stay compressed bytes,
  which are not a picture).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Optional

UNSAFE_PATH = "unsafe_image_path"
NOT_A_FILE = "not_a_regular_file"
TOO_LARGE = "image_too_large"
MISSING = "missing_image"
UNREADABLE = "undecodable_image"


class PictureRefused(Exception):
    """The row's picture cannot be read; ``reason`` is a quarantine reason, ``detail`` is safe to show."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class PictureReader:
    """Reads pictures named by a catalogue from ``images_dir`` (local path or a Beam filesystem URL)."""

    images_dir: str
    max_bytes: int = 50 * 1024 * 1024

    @property
    def remote(self) -> bool:
        return "://" in self.images_dir

    def check_name(self, name: str) -> str:
        """The name as a path relative to the images folder, or :class:`PictureRefused`."""
        if not name or "\x00" in name or "://" in name or name.startswith(("/", "\\")) or \
                (len(name) > 1 and name[1] == ":"):
            raise PictureRefused(UNSAFE_PATH, "the image name must be a file name inside the images folder "
                                              "(no absolute path, drive or URL)")
        parts = name.replace("\\", "/").split("/")
        if any(p in ("..", "") for p in parts):
            raise PictureRefused(UNSAFE_PATH, "the image name must be a file name inside the images folder "
                                              "(no '..' or empty path component)")
        return posixpath.join(*parts)

    def read(self, name: str) -> bytes:
        """The picture's bytes (at most ``max_bytes``), uncompressed as stored.

        Raises:
          PictureRefused: the name escapes the images folder, the file is missing, not a regular
            file, too large or unreadable.
        """
        relative = self.check_name(name)
        return self._read_remote(relative) if self.remote else self._read_local(relative)

    def _read_local(self, relative: str) -> bytes:
        root = os.path.realpath(self.images_dir)
        path = os.path.join(root, relative)
        real = os.path.realpath(path)
        if os.path.commonpath([real, root]) != root:
            raise PictureRefused(UNSAFE_PATH, "the image name leads outside the images folder (a symbolic link)")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise PictureRefused(MISSING, f"no file '{relative}' in the images folder") from None
        except OSError as e:
            raise PictureRefused(UNREADABLE, f"'{relative}' cannot be opened ({e.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise PictureRefused(NOT_A_FILE, f"'{relative}' is not a regular file (a folder, pipe or device)")
            if info.st_size > self.max_bytes:
                raise PictureRefused(TOO_LARGE, f"'{relative}' has {info.st_size} bytes, over the {self.max_bytes}-byte "
                                                "limit (data.max_image_bytes)")
            chunks, left = [], self.max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if len(data) > self.max_bytes:  # grew while being read
                raise PictureRefused(TOO_LARGE, f"'{relative}' is over the {self.max_bytes}-byte limit (data.max_image_bytes)")
            return data
        finally:
            os.close(fd)

    def _read_remote(self, relative: str) -> bytes:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        path = FileSystems.join(self.images_dir, relative)
        match = FileSystems.match([path])[0].metadata_list
        if not match:
            raise PictureRefused(MISSING, f"no file '{relative}' in the images folder")
        if match[0].size_in_bytes > self.max_bytes:
            raise PictureRefused(TOO_LARGE, f"'{relative}' has {match[0].size_in_bytes} bytes, over the "
                                            f"{self.max_bytes}-byte limit (data.max_image_bytes)")
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise PictureRefused(TOO_LARGE, f"'{relative}' is over the {self.max_bytes}-byte limit (data.max_image_bytes)")
        return data


def safe_reader(images_dir: str, max_bytes: Optional[int] = None) -> PictureReader:
    return PictureReader(images_dir, max_bytes or PictureReader.max_bytes)
