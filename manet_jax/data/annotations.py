"""What the data sets' annotation files have in common: 'x y' point lines, and the errors
that name a file (and line) when a folder or a file is not what the distribution has."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class LayoutError(FileNotFoundError):
    """The data folder is missing or not laid out as distributed."""


class AnnotationError(ValueError):
    """A label or landmark file that cannot be read; the message names file and line."""


MAX_COORDINATE = 1e6  # px; beyond it a "landmark" is junk (and beyond ~3e38 float32 turns it into inf)


def read_points(path, num_points: int, more_lines_follow: bool = False) -> np.ndarray:
    """(num_points, 2) float32 from 'x y' lines (blank lines skipped, commas and scientific
    notation welcome). With `more_lines_follow` the points are the first lines of the file
    and whatever follows them (RAF-DB's attribute lines) is not read."""
    points = []
    for line_no, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if more_lines_follow and len(points) == num_points:
            break
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            x, y = float(fields[0]), float(fields[1])
        except ValueError:
            raise AnnotationError(f"{path}, line {line_no}: expected two numbers 'x y', got {line.strip()!r}") from None
        if not (abs(x) <= MAX_COORDINATE and abs(y) <= MAX_COORDINATE):  # also NaN, inf and float32 overflow
            raise AnnotationError(
                f"{path}, line {line_no}: landmark is not a finite pixel position "
                f"(|x|, |y| <= {MAX_COORDINATE:g}): {line.strip()!r}"
            )
        points.append((x, y))
    if len(points) != num_points:
        where = " at the top" if more_lines_follow else ""
        raise AnnotationError(f"{path}: expected {num_points} landmarks{where}, found {len(points)}")
    return np.asarray(points, np.float32)
