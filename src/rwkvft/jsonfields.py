"""Typed reads of JSON that other programs (or a damaged copy) wrote.

Every reader of foreign JSON (a state file's metadata, `train_config.json`, HF peft
`adapter_config.json`, HF `config.json`) goes through here, so a field of the wrong JSON type
(a list where a number belongs, text for `r`, null for a name) is one `UserError` line naming
the file, the field and what was found, never a TypeError deep in the caller.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from .errors import UserError, quote

_MISSING = object()

# the JSON type names a user sees in the file, for messages
def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():  # 8.0 from a tool that writes all numbers as floats
        return int(v)
    return None


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _str(v):
    return v if isinstance(v, str) else None


def _bool(v):
    return v if isinstance(v, bool) else None


def _str_list(v):
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    return None


def _int_list(v):
    if isinstance(v, list) and all(_int(x) is not None for x in v):
        return [_int(x) for x in v]
    return None


def _object(v):
    return v if isinstance(v, dict) else None


def _bool_or_str(v):
    return v if isinstance(v, (bool, str)) else None


# kind -> (converter returning None for a wrong value, what the field must be)
KINDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "int": (_int, "a whole number"),
    "number": (_number, "a finite number"),
    "str": (_str, "text"),
    "bool": (_bool, "true or false"),
    "str_list": (_str_list, "a list of names"),
    "int_list": (_int_list, "a list of whole numbers"),
    "object": (_object, "an object"),
    "bool_or_str": (_bool_or_str, "true, false or a name"),
}


def read_object(path, what: str, fix: str) -> dict:
    """The JSON object in file `path` (`what` names it in messages, `fix` says what to do)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {what} needs it; {fix}") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path} is not valid JSON ({quote(e)}); {fix}") from None
    return as_object(data, f"{path}", fix)


def as_object(data: Any, source: str, fix: str) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{source} holds {json_type(data)}, not a JSON object; {fix}")
    return data


def field(obj: dict, name: str, kind: str, source: str, default: Any = _MISSING,
          nullable: bool = False, check: Callable[[Any], bool] | None = None,
          must: str = "") -> Any:
    """obj[name] as `kind` (see KINDS); `default` when absent (required when no default),
    None kept when `nullable`; `check` (with `must` saying what it wants) refuses bad values."""
    if name not in obj:
        if default is _MISSING:
            raise UserError(f"{source} has no {name!r} field; restore the file or write it anew")
        return default
    value = obj[name]
    if value is None and nullable:
        return None
    convert, wanted = KINDS[kind]
    got = convert(value)
    if got is None or (check is not None and not check(got)):
        raise UserError(f"{source}: {name!r} must be {must or wanted}, but it is {json_type(value)} "
                        f"({_show(value)}); fix the field or restore the file")
    return got
