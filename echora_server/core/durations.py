"""Durations in configuration: ``90s``, ``15m``, ``36h``, ``7d``, ``1h30m``; seconds inside."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> Any:
    """Seconds from ``90s``, ``15m``, ``36h``, ``7d``, ``1h30m`` or a bare number of seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("expected a duration such as 90s, 15m, 36h, 7d or 1h30m")
    return sum(float(number) * UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """``3930`` -> ``1h5m30s``; what ``parse_duration`` reads back."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s"
    text, left = "", int(seconds)
    for unit in ("d", "h", "m", "s"):
        count, left = divmod(left, int(UNITS[unit]))
        if count:
            text += f"{count}{unit}"
    return text


def within(low: float, high: float, *, inclusive_low: bool = True) -> AfterValidator:
    def check(seconds: float) -> float:
        if not (seconds >= low if inclusive_low else seconds > low) or seconds > high:
            if inclusive_low:
                allowed = f"between {format_duration(low)} and {format_duration(high)}"
            else:
                allowed = f"more than {format_duration(low)} and at most {format_duration(high)}"
            raise ValueError(f"must be {allowed}")
        return seconds

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]  # seconds
