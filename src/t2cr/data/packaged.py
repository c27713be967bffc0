"""The official annotation and split files shipped with t2cr (MTL-AQA, FineDiving, JIGSAWS).

`data.annotations: packaged` (the schema's default) reads the copy in `t2cr/data/annotation_files/`, so a
run on these datasets needs no annotation download. Every packaged file is checked against
`annotation_files/SHA256SUMS` when it is read: a damaged install fails loudly instead of training on
altered labels. Provenance and licence terms: `annotation_files/README.md`. AQA-7's split files ship only
inside its dataset archive and are not packaged.
"""

from __future__ import annotations

import hashlib
import io
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


# The globals an annotation pickle may name: what numpy arrays, dtypes and numpy scalars pickle as (numpy 1
# writes numpy.core, numpy 2 numpy._core; protocol 5 arrays use _frombuffer) and the builtin containers and
# scalars that have no opcode of their own (protocols 0-2 name builtins `__builtin__`, as Python 2 did). The
# packaged files name only numpy's four: numpy.ndarray, numpy.dtype, numpy.core.multiarray._reconstruct and
# .scalar. Any other global could be a callable that REDUCE would run.
PLAIN_BUILTINS = ("set", "frozenset", "complex", "bytes", "bytearray")
PLAIN_DATA_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    *((module, name) for module in ("builtins", "__builtin__") for name in PLAIN_BUILTINS),
})
# protocol 0-2 pickles write bytes as _codecs.encode(text, 'latin1'): allowed with that one encoding only
LATIN1_BYTES = ("_codecs", "encode")
PLAIN_DATA = "annotation files may hold only plain data (lists, dicts, numbers, strings, numpy arrays)"


class RefusedPickleError(ValueError):
    """An annotation pickle that would build something other than plain data (run code, import a module)."""


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as protocol 2 uses it for bytes; other codecs have no business in annotations."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin1 builds bytes)")
    return text.encode("latin1")


def _shown(module: str, name: str) -> str:
    """The global's name as one short printable line (a crafted file may put anything there)."""
    text = f"{module}.{name}"
    return text if text.isprintable() and len(text) <= 100 else ascii(text)[:100]


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: every global it is asked for (GLOBAL, STACK_GLOBAL, INST,
    EXT) must be in PLAIN_DATA_GLOBALS, and persistent ids are refused, so a file from elsewhere cannot run
    code while it is read."""

    def __init__(self, content: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(content))
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == LATIN1_BYTES:
            return _latin1_bytes
        if (module, name) not in PLAIN_DATA_GLOBALS:
            raise RefusedPickleError(f"{self.path}: refused to load {_shown(module, name)}: {PLAIN_DATA}")
        return super().find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        raise RefusedPickleError(f"{self.path}: refused to load a persistent id: {PLAIN_DATA}")


def load_plain_pickle(path: Path, content: bytes) -> object:
    """`pickle.loads(content)` for a file that holds plain data; RefusedPickleError for anything else."""
    return PlainDataUnpickler(content, path).load()


def load_pickle(path: Path, what: str) -> object:
    """One annotation pickle, plain data only; a packaged file is checked against its SHA-256 first."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; set data.annotations to the folder holding it")
    content = path.read_bytes()
    _verify_if_packaged(path, content)
    try:
        return load_plain_pickle(path, content)
    except RefusedPickleError:
        raise  # already one line naming the file and the global
    except Exception as error:  # unpickling raises many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable {what} ({type(error).__name__}: {error}); "
                         "point data.annotations at the official files") from error
