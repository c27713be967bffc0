"""The checks every annotation reader applies before it hands out a `Sample`, shared so that all readers
refuse bad annotations alike: with an `AnnotationError` whose message names the file and the key.

Readers convert raw fields with these helpers instead of `float()` / `int()` / `str()`: those accept NaN,
infinities, booleans and numeric strings, truncate 7.5 to 7 and turn None into 'None', each of which
would give a silently wrong sample. What differs between datasets (the score range, whether a difficulty
is used, the first frame number) is data: one `SampleRules` per reader.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

Splits = dict[str, list[Sample]]


class AnnotationError(ValueError):
    """An annotation or split file that cannot give valid samples; the message names the file and the key."""

    def __str__(self) -> str:
        # the plain message, also for MissingAnnotationKeyError (KeyError.__str__ would quote it)
        return str(self.args[0]) if self.args else ""


class MissingAnnotationKeyError(AnnotationError, KeyError):
    """A split lists keys that its annotation file lacks; also a KeyError, as this refusal always was."""


@dataclass(frozen=True)
class Bounds:
    """A closed range of valid values, or half-open at `low` (a difficulty of 0 would divide by zero)."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class SampleRules:
    """What a valid sample of one dataset is."""

    score: Bounds  # the score as the reader reports it
    difficulty: Bounds | None = None  # None: the dataset has no difficulty
    # the highest score a difficulty of 1 can give (the score is marks times the difficulty); None: no such
    # link
    max_score_per_difficulty: float | None = None
    first_frame: int = 0  # the lowest frame number a frame range may start at
    # False: a key in both the train and the test split is logged, not refused
    disjoint_splits: bool = True


# The diving datasets (MTL-AQA, FineDiving): a dive's score is three judges' 0-10 marks (synchronised
# diving: 5 of 11 marks times 0.6) summed and multiplied by its degree of difficulty, which is positive
# (1.5-4.1 in the datasets; the bound is left open for a user's own annotations).
DIVING_RULES = SampleRules(score=Bounds(0.0, math.inf), difficulty=Bounds(0.0, math.inf, low_open=True),
                           max_score_per_difficulty=30.0)
SCORE_ROUNDING = 0.005  # scores are reported to two decimals
# no video has more frames (two years at 30 fps), and frame numbers stay within every platform's numpy int
LAST_FRAME_NUMBER = 2**31 - 1


@dataclass(frozen=True)
class Where:
    """The file a value was read from and the record it belongs to: what every refusal names."""

    path: Path
    key_text: str | None = None  # repr of the record's key, or e.g. 'row 3' for a table

    @classmethod
    def at(cls, path: Path, key: object) -> Where:
        return cls(path, _printable(key))

    def error(self, problem: str, error_type: type[AnnotationError] = AnnotationError) -> AnnotationError:
        prefix = str(self.path) if self.key_text is None else f"{self.path}: {self.key_text}"
        return error_type(f"{prefix}: {problem}")


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _as_float(value: numbers.Real) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range is as unusable as an infinity
        return math.inf


def number(value: object, where: Where, field: str, bounds: Bounds | None = None) -> float:
    """`value` as a finite float, within `bounds` when given."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise where.error(f"{field} is {_short(value)} ({type(value).__name__}); expected a number")
    result = _as_float(value)
    if not math.isfinite(result) or (bounds is not None and result not in bounds):
        expected = "a finite number" + ("" if bounds is None else f" in {bounds}")
        raise where.error(f"{field} is {_short(value)}; expected {expected}")
    return result


def integer(value: object, where: Where, field: str, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """`value` as an int: an integer, or a float with an integer value (MATLAB tables hold only floats)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise where.error(f"{field} is {_short(value)} ({type(value).__name__}); expected an integer")
    if isinstance(value, numbers.Integral):
        result = int(value)
    else:
        as_float = _as_float(value)
        if not as_float.is_integer():
            raise where.error(f"{field} is {_short(value)}; expected an integer")
        result = int(as_float)
    if minimum is not None and result < minimum:
        raise where.error(f"{field} is {_short(result)}; expected an integer >= {minimum}")
    if maximum is not None and result > maximum:
        raise where.error(f"{field} is {_short(result)}; expected an integer <= {maximum}")
    return result


def text(value: object, where: Where, field: str) -> str:
    """`value` as a non-empty string (a label such as a dive number; not a number turned into text)."""
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{field} is {_short(value)}; expected a non-empty string")
    return str(value)


# what a single file or folder name may not hold: a separator would make it a path, '.' and '..' name other
# folders, a NUL ends the name early in the operating system's calls
PATH_SEPARATORS = ("/", "\\")
NOT_NAMES = (".", "..")


def path_part(value: object, where: Where, field: str) -> str:
    """`value` as a non-empty string that names one file or folder: it becomes part of a frame folder, a video
    path or a JPEG output folder, so `../x`, `a/b` or an absolute path would lead outside the data's root."""
    name = text(value, where, field)
    if any(separator in name for separator in PATH_SEPARATORS) or name in NOT_NAMES or "\0" in name:
        raise where.error(f"{field} is {_short(name)}: it names a frame folder, so it must be a single name (no "
                          "'/' or '\\', not '.' or '..', no NUL character); refusing a path that could lead "
                          "outside data.root")
    return name


def is_list(value: object) -> bool:
    """A list, a tuple or a 1-d array: what annotation files hold sequences as."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, (list, tuple))


def items(value: object, where: Where, what: str, length: int | None = None) -> Sequence:
    """`value` as a sequence (of `length` items when given)."""
    if not is_list(value):
        raise where.error(f"is {type(value).__name__} {_short(value)}, not {what}")
    if length is not None and len(value) != length:  # type: ignore[arg-type]
        raise where.error(f"has {len(value)} items, not {what}")  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


JUDGE_MARKS = Bounds(0.0, 10.0)  # a diving judge's mark


def judge_marks(value: object, where: Where, field: str = "judge_scores") -> tuple[float, ...]:
    """Per-judge marks: a non-empty sequence of numbers in 0..10."""
    marks = items(value, where, f"a list of {field}")
    if len(marks) == 0:
        raise where.error(f"{field} is empty; expected each judge's mark")
    return tuple(number(mark, where, f"{field}[{i}]", JUDGE_MARKS) for i, mark in enumerate(marks))


def record(entry: object, where: Where, needed: Sequence[str], what: str) -> Mapping:
    """A dict entry holding the fields `needed` (a mapping of another format is refused with a hint)."""
    if not isinstance(entry, Mapping):
        raise where.error(f"is {type(entry).__name__} {_short(entry)}: it does not hold {what} (entries "
                          f"need the fields {list(needed)}; is data.format right for this folder?)")
    missing = [name for name in needed if name not in entry]
    if missing:
        raise where.error(f"has no {', '.join(missing)}: it does not hold {what} (entries need the fields "
                          f"{list(needed)}; is data.format right for this folder?)")
    return entry


def score_and_difficulty(score: object, difficulty: object, where: Where, rules: SampleRules,
                         fields: tuple[str, str] = ("score", "difficulty")) -> tuple[float, float]:
    """A score and the difficulty it was multiplied by, each in its bounds and consistent with each other."""
    score_field, difficulty_field = fields
    value = number(score, where, score_field, rules.score)
    factor = number(difficulty, where, difficulty_field, rules.difficulty)
    ratio = rules.max_score_per_difficulty
    if ratio is not None and value > ratio * factor + SCORE_ROUNDING:
        raise where.error(f"{score_field} {value:g} is above {ratio:g} x {difficulty_field} ({factor:g}), "
                          "the highest score that difficulty can give")
    return value, factor


def frame_range(start: object, end: object, where: Where, rules: SampleRules) -> tuple[int, int]:
    """The first and last frame (inclusive) of a sample: integers, first_frame <= start <= end."""
    first = integer(start, where, "start_frame", minimum=rules.first_frame, maximum=LAST_FRAME_NUMBER)
    last = integer(end, where, "end_frame", maximum=LAST_FRAME_NUMBER)
    if last < first:
        raise where.error(f"the frame range {first}..{last} is reversed (end_frame < start_frame)")
    return first, last


def pair(raw: object, where: Where, what: str) -> tuple[object, object]:
    """A two-part key such as (event, idx)."""
    if not isinstance(raw, (tuple, list)) or len(raw) != 2:
        raise where.error(f"is not a key {what}")
    return raw[0], raw[1]


def split_keys(raw: object, path: Path, parse: Callable[[object, Where], Hashable]) -> list[Hashable]:
    """The keys a split file lists, each parsed by the reader's `parse(raw_key, where)`."""
    if not isinstance(raw, (list, tuple)):
        raise Where(path).error(f"is {type(raw).__name__} {_short(raw)}, not a list of sample keys")
    return [parse(key, Where.at(path, key)) for key in raw]


def require_keys(keys: Sequence[Hashable], labels: Mapping, split_path: Path, labels_path: Path) -> None:
    """Every key of a split has a record in the annotation file."""
    missing = [key for key in keys if key not in labels]
    if missing:
        raise MissingAnnotationKeyError(f"{split_path}: {len(missing)} keys are not in the annotation file "
                                        f"{labels_path.name}, e.g. {_printable(missing[:5])}")


def check_splits(splits: Splits, sources: Mapping[str, str], rules: SampleRules) -> Splits:
    """Every split has samples, names each key once, holds scores in the dataset's range and (unless the rules
    allow it) shares no key with another split. `sources` names where each split was read from (a file, a
    fold of a file)."""
    for split, samples in splits.items():
        _check_split(samples, f"{sources[split]}: the {split} split", rules)
    names = list(splits)
    for position, first in enumerate(names):
        for second in names[position + 1:]:
            shared = {s.key for s in splits[first]} & {s.key for s in splits[second]}
            if not shared:
                continue
            example = sorted(shared, key=_printable)[:5]
            message = (f"{sources[first]} and {sources[second]}: {len(shared)} keys are in both the {first} "
                       f"and the {second} split, e.g. {_printable(example)}")
            if rules.disjoint_splits:
                raise AnnotationError(message)
            log.warning("%s (the %s scores then measure fitting, not generalisation)", message, second)
    return splits


def _check_split(samples: list[Sample], source: str, rules: SampleRules) -> None:
    if not samples:
        raise AnnotationError(f"{source} has no samples")
    seen: set[Hashable] = set()
    for sample in samples:
        if sample.key in seen:
            raise AnnotationError(f"{source} lists {_printable(sample.key)} twice")
        seen.add(sample.key)
        # the readers check each raw value; this also covers the scores they derive (a sum, a rescaling)
        if not math.isfinite(sample.score) or sample.score not in rules.score:
            raise AnnotationError(f"{source}: {_printable(sample.key)} has the score {sample.score}, not in "
                                  f"{rules.score}")


def _printable(value: object) -> str:
    try:
        return repr(value)
    except ValueError:  # an integer (or a key holding one) beyond Python's limit for int -> str conversion
        return f"<{type(value).__name__} too large to print>"


def _short(value: object, limit: int = 60) -> str:
    text_value = _printable(value)
    return text_value if len(text_value) <= limit else text_value[:limit] + "..."
