"""A catalogue's batches: ``DATA/<batch>/`` folders, each with its CSV and images folder, as TFX spans.

New listings arrive in batches. A catalogue folder is either

- **one batch**: the CSV (``data.csv_file``, or the only ``*.csv``) and the images folder directly in
  ``DATA/`` (what the generated sample and the Flipkart sample are), or
- **batch folders**: no CSV in ``DATA/`` itself, and one sub-folder per batch, each holding its CSV
  and its images folder (``DATA/2026-12-01/flipkart.csv``, ``DATA/2026-12-01/Images/``). Batches are
  ordered **by folder name** (name them so that this is their arrival order: dates, or zero-padded
  numbers); a batch's **span** is its position in that order, from 0, as TFX numbers spans.

A run trains on the newest ``data.window_batches`` batches (0: all). The drift gate compares the
newest batch with the one before it, whether or not that one is in the window. Plain Python and
Beam's filesystems (local paths and ``gs://``); no TFX.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems


class BatchLayoutError(FileNotFoundError):
    """The catalogue folder is neither one batch nor a folder of batch folders."""


@dataclass(frozen=True)
class Batch:
    """One batch of listings."""

    span: int  # position in name order, from 0
    name: str  # the batch folder's name ("" for a one-folder catalogue)
    folder: str  # the folder holding its CSV and images folder
    csv: str  # its CSV file
    images_dir: str  # its images folder

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @property
    def label(self) -> str:
        """How messages name the batch."""
        return f"batch '{self.name}' (span {self.span})" if self.name else "the catalogue"


def _csvs(folder: str, csv_file: str) -> List[str]:
    if csv_file:
        path = FileSystems.join(folder, csv_file)
        return [path] if FileSystems.exists(path) else []
    return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "*.csv")])[0].metadata_list)


def _one_csv(folder: str, csv_file: str, where: str) -> str:
    found = _csvs(folder, csv_file)
    if len(found) == 1:
        return found[0]
    if csv_file:
        raise BatchLayoutError(f"{where}: catalogue CSV '{FileSystems.join(folder, csv_file)}' does not exist "
                               "(data.csv_file)")
    names = ", ".join(os.path.basename(p) for p in found) or "none"
    raise BatchLayoutError(f"{where}: expected exactly one *.csv in '{folder}', found {names}; set data.csv_file")


def _subfolders(data_dir: str) -> List[str]:
    """The immediate sub-folders of ``data_dir`` that hold a file, by name (hidden ones left out)."""
    pattern = FileSystems.join(data_dir, "*", "*")
    names = set()
    prefix = data_dir.rstrip("/") + "/"
    for m in FileSystems.match([pattern])[0].metadata_list:
        rest = m.path[len(prefix):] if m.path.startswith(prefix) else os.path.relpath(m.path, data_dir)
        first = rest.replace("\\", "/").split("/")[0]
        if first and not first.startswith("."):
            names.add(first)
    if "://" not in data_dir:  # a local sub-folder whose files are all in its images folder
        try:
            names.update(n for n in os.listdir(data_dir)
                         if not n.startswith(".") and os.path.isdir(os.path.join(data_dir, n)))
        except OSError:
            pass
    return sorted(names)


def list_batches(data_dir: str, csv_file: Optional[str] = None, images_dir: str = "Images") -> List[Batch]:
    """The catalogue's batches in arrival (name) order.

    Raises:
      BatchLayoutError: ``data_dir`` has no CSV of its own and no batch folder; a batch folder has no
        CSV (or several without ``data.csv_file``), or no images folder.
    """
    csv_file = csv_file or ""
    own = _csvs(data_dir, csv_file)
    if own:
        return [Batch(0, "", data_dir, _one_csv(data_dir, csv_file, "the catalogue"),
                      FileSystems.join(data_dir, images_dir))]
    folders = [n for n in _subfolders(data_dir) if n != images_dir]
    if not folders:
        what = f"'{csv_file}'" if csv_file else "*.csv"
        raise BatchLayoutError(
            f"'{data_dir}' holds no catalogue: no {what} in it and no batch folder (DATA/<batch>/ with its CSV "
            f"and {images_dir}/); give the folder that holds the CSV, or one folder per batch")
    batches = []
    for span, name in enumerate(folders):
        folder = FileSystems.join(data_dir, name)
        csv = _one_csv(folder, csv_file, f"batch folder '{name}'")
        images = FileSystems.join(folder, images_dir)
        if not FileSystems.match([FileSystems.join(images, "*")])[0].metadata_list:
            raise BatchLayoutError(f"batch folder '{name}' has no pictures in '{images}' (data.images_dir): every "
                                   "batch folder holds its CSV and its images folder")
        batches.append(Batch(span, name, folder, csv, images))
    return batches


def window(batches: Sequence[Batch], window_batches: int) -> List[Batch]:
    """The newest ``window_batches`` batches (0: all), oldest first."""
    if window_batches < 0:
        raise ValueError(f"window_batches must be >= 0, got {window_batches}")
    return list(batches[-window_batches:] if window_batches else batches)


def newest_and_previous(batches: Sequence[Batch]) -> tuple:
    """``(newest, previous)``: the drift gate's pair; ``previous`` is None for a single batch."""
    if not batches:
        raise ValueError("no batches")
    return batches[-1], (batches[-2] if len(batches) > 1 else None)
