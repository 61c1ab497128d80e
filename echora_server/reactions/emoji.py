"""What a reaction may be: one short run of emoji code points, written once as a pattern that
the API applies and the OpenAPI document states (JSON Schema and Python read it alike)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from echora_server.core.errors import InvalidRequest

MAX_EMOJI = 32  # code points: room for ZWJ families, skin tones and subdivision flags

# Code points that are emoji (pictographs, symbols with an emoji presentation, regional
# indicators for flags, skin tones), from Unicode's emoji-data, as ranges.
_BASES = (
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1FAFF),
)
# What joins or modifies them, never first: the zero-width joiner, the emoji variation
# selector, tags (subdivision flags such as England's).
_JOINERS = ((0x200D, 0x200D), (0xFE0F, 0xFE0F), (0xE0020, 0xE007F))


def _escape(code: int) -> str:
    # \uXXXX inside the BMP; beyond it the character itself (ECMA 262 knows no \U escape).
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def _class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(_escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}" for lo, hi in ranges)


_BODY = f"[{_class(_BASES)}][{_class(_BASES + _JOINERS)}]{{0,{MAX_EMOJI - 1}}}"
EMOJI_PATTERN = f"^{_BODY}$"
_EMOJI = re.compile(_BODY)

EMOJI_RULE = (
    f"1-{MAX_EMOJI} code points, each an emoji (pictographs, emoji symbols, regional "
    "indicators, skin tones) or, after the first, a zero-width joiner (U+200D), the emoji "
    "variation selector (U+FE0F) or a tag (U+E0020-E007F). Letters, digits, spaces and "
    "control characters are refused (so are keycap sequences, which start with a digit). "
    "Compared as sent: send fully qualified emoji (with U+FE0F where Unicode has one)."
)


_PROBLEM = f"must be 1-{MAX_EMOJI} emoji code points (the rule: the OpenAPI document)"


class ReactionPath(BaseModel):
    """The path of a reaction: ``/api/messages/{message_id}/reactions/{emoji}``."""

    model_config = ConfigDict(frozen=True, strict=True, regex_engine="python-re")

    emoji: str = Field(
        min_length=1, max_length=MAX_EMOJI, pattern=EMOJI_PATTERN, description=EMOJI_RULE
    )


def emoji_schema() -> dict[str, object]:
    """The path parameter's schema, as the model states it."""
    schema = dict(ReactionPath.model_json_schema()["properties"]["emoji"])
    schema.pop("title", None)
    return schema


def check_emoji(raw: str) -> str:
    """The emoji of a path, else 422 naming the rule."""
    try:
        emoji = ReactionPath.model_validate({"emoji": raw}).emoji
    except ValidationError:
        emoji = None
    # fullmatch too: Python's "$" also matches before a final newline.
    if emoji is None or not _EMOJI.fullmatch(emoji):
        raise InvalidRequest(details=[{"field": "emoji", "problem": _PROBLEM}])
    return emoji
