"""The official annotation and split files shipped with t2cr (MTL-AQA, FineDiving, JIGSAWS).

`data.annotations: packaged` (the schema's default) reads the copy in `t2cr/data/annotation_files/`, so a
run on these datasets needs no annotation download. Every packaged file is checked against
`annotation_files/SHA256SUMS` when it is read: a damaged install fails loudly instead of training on
altered labels. Provenance and licence terms: `annotation_files/README.md`. AQA-7's split files ship only
inside its dataset archive and are not packaged.
"""

from __future__ import annotations

import hashlib
import pickle
from functools import cache
from importlib import resources
from pathlib import Path

PACKAGED = "packaged"
# data.format -> folder of annotation_files/ (the formats whose official files are packaged)
PACKAGED_FOLDERS = {"mtl_aqa": "MTL-AQA", "finediving": "FineDiving", "jigsaws": "JIGSAWS"}
CHECKSUMS_FILE = "SHA256SUMS"


def packaged_root() -> Path:
    """The folder holding the packaged annotation files (one sub-folder per dataset)."""
    return Path(str(resources.files("t2cr.data") / "annotation_files"))


def packaged_folder(data_format: str) -> Path:
    """The packaged annotation folder of `data_format` (a `data.format` value)."""
    if data_format not in PACKAGED_FOLDERS:
        raise ValueError(f"data.annotations=packaged: t2cr ships no annotation files for data.format="
                         f"{data_format!r} (only for {sorted(PACKAGED_FOLDERS)}); set data.annotations to the "
                         "folder holding the dataset's official split files")
    return packaged_root() / PACKAGED_FOLDERS[data_format]


def annotation_folder(annotations: str | Path, data_format: str) -> Path:
    """`data.annotations` as a folder: `packaged` is the packaged copy for the format, anything else a path."""
    if str(annotations) == PACKAGED:
        return packaged_folder(data_format)
    return Path(annotations)


@cache
def _checksums(root: Path) -> dict[str, str]:
    lines = (root / CHECKSUMS_FILE).read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def _verify_if_packaged(path: Path, content: bytes) -> None:
    root = packaged_root().resolve()
    try:
        relative = path.resolve().relative_to(root).as_posix()
    except ValueError:
        return  # a user's own file: nothing to compare with
    expected = _checksums(root).get(relative)
    actual = hashlib.sha256(content).hexdigest()
    if expected is None or actual != expected:
        raise ValueError(f"{path}: the packaged annotation file does not match {root / CHECKSUMS_FILE} "
                         f"(sha256 {actual[:12]}..., expected {str(expected)[:12]}...); reinstall t2cr "
                         "(pip install --force-reinstall t2cr) or set data.annotations to your own copy")


def load_pickle(path: Path, what: str) -> object:
    """One annotation pickle; a packaged file is checked against its SHA-256 first."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; set data.annotations to the folder holding it")
    content = path.read_bytes()
    _verify_if_packaged(path, content)
    try:
        return pickle.loads(content)
    except Exception as error:  # unpickling raises many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable {what} ({type(error).__name__}: {error}); "
                         "point data.annotations at the official files") from error
