"""Override values as a sweep holds them: shown as typed, sorted as a grid, compared as numbers."""

from __future__ import annotations

import math
import re
from typing import Any

from splade_peft.results import as_number


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def display_value(value: Any) -> str:
    """An override value as the user typed it; pandas may have read "4" back as 4.0."""
    if is_missing(value):
        return "?"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def short_names(keys: list[str]) -> dict[str, str]:
    """The last dotted part of each key ("lora.r" -> "r") unless two keys would share it."""
    last = {key: key.rsplit(".", 1)[-1] for key in keys}
    return {key: name if list(last.values()).count(name) == 1 else key for key, name in last.items()}


def grid_sort_key(value: Any) -> tuple:
    """Numbers first and by value (ranks 1, 4, 16, not 1, 16, 4), then text, then missing values."""
    if is_missing(value):
        return (2, 0.0, "")
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def natural_key(name: str) -> tuple:
    """Job folders in numeric order ("2_..." before "10_..."); digits sit at the odd split positions."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name)))
