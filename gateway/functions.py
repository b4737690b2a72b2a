"""The few JMESPath functions mapping files need beyond JMESPath's own.

| function | what it does |
|---|---|
| `default(value, fallback)` | `value` unless it is null (`||` would also replace false, 0 and "") |
| `to_iso(value, format)` | a provider date -> ISO 8601 (`2024-06-15T12:00:00Z`) |
| `from_iso(value, format)` | ISO 8601 -> a provider date |
| `to_remote(value, map)` | a unified enum value -> the provider's, through a value map |
| `to_unified(value, map)` | the provider's enum value -> the unified one (the same map, read backwards) |
| `split(value, separator)` | a string -> an array of strings (JMESPath has `join` already) |
| `multiply(value, factor)` | a number times a factor, in decimal (units -> cents: `100`; back: `0.01`) |
| `context(key)` | a setting of the caller's connection, in expressions that do not see `context` |
| `merge_each(items, object)` | each object of `items` merged with `object` (its members win): carries a parent's fields into its children |

Date formats: `epoch` (Unix seconds), `epoch_ms` (Unix milliseconds), `date`
(`2024-06-15`), `iso` (ISO 8601, normalised to UTC) and `msjson` (`/Date(1718452800000+0000)/`).
A map is the name of one of the file's `values` maps, or an inline object.
Every function passes null through, so an absent field stays absent.
Numbers and strings convert with JMESPath's own `to_number` and `to_string`.
"""

import re
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from jmespath import functions
from jmespath.exceptions import JMESPathTypeError

_MSJSON = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class DateFormatError(ValueError):
    pass


def _parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# Day number -> "YYYY-MM-DDT". The records of one answer fall on few days, and
# strftime of a whole moment costs more than the rest of a record's date.
# The time of day from two tables ("HH:MM:" by minute, "SSZ" by second): each
# string joined costs as much as the arithmetic.
_DAYS: dict[int, str] = {}
_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SECONDS = [f"{s:02d}Z" for s in range(60)]


def _whole_seconds_iso(seconds: int) -> str:
    day, second = divmod(seconds, 86400)
    date_part = _DAYS.get(day)
    if date_part is None:
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        date_part = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    minute, second = divmod(second, 60)
    return date_part + _MINUTES[minute] + _SECONDS[second]


def to_iso(value: Any, fmt: str) -> str:
    if fmt == "epoch":
        if isinstance(value, int) and not isinstance(value, bool):
            return _whole_seconds_iso(value)
        if isinstance(value, float) and value.is_integer():
            return _whole_seconds_iso(int(value))
        return _iso(datetime.fromtimestamp(float(value), timezone.utc))
    if fmt == "epoch_ms":
        return _iso(datetime.fromtimestamp(float(value) / 1000, timezone.utc))
    if fmt == "date":
        return _iso(datetime.combine(date.fromisoformat(str(value)[:10]), datetime.min.time(), timezone.utc))
    if fmt == "iso":
        return _iso(_parse_iso(str(value)))
    if fmt == "msjson":
        match = _MSJSON.match(str(value))
        if not match:
            raise DateFormatError(f"not a /Date(...)/ value: {value!r}")
        return _iso(datetime.fromtimestamp(int(match.group(1)) / 1000, timezone.utc))
    raise DateFormatError(f"unknown date format {fmt!r}")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _since_epoch(moment: datetime, unit: timedelta) -> int:
    # Integer arithmetic: float timestamp() * 1000 truncates some instants a
    # millisecond short, and int() rounds instants before 1970 the wrong way.
    return (moment - _EPOCH) // unit


def from_iso(value: Any, fmt: str) -> Any:
    moment = _parse_iso(str(value))
    if fmt == "epoch":
        return _since_epoch(moment, timedelta(seconds=1))
    if fmt == "epoch_ms":
        return _since_epoch(moment, timedelta(milliseconds=1))
    if fmt == "date":
        # The calendar date as written: a date-only field means the caller's own day,
        # which converting to UTC first would shift (2024-06-15T00:00+09:00 is the 15th).
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).date().isoformat()
    if fmt == "iso":
        return _iso(moment)
    if fmt == "msjson":
        return f"/Date({_since_epoch(moment, timedelta(milliseconds=1))}+0000)/"
    raise DateFormatError(f"unknown date format {fmt!r}")


def multiply(value: Any, factor: Any) -> int | float:
    """value * factor in decimal arithmetic, so 0.07 * 100 is 7, not 7.000000000000001;
    a whole result is an int."""
    product = Decimal(str(value)) * Decimal(str(factor))
    return int(product) if product == product.to_integral_value() else float(product)


DATE_FORMATS = ("epoch", "epoch_ms", "date", "iso", "msjson")


class Functions(functions.Functions):
    """Bound once per connection: its value maps and context never change."""

    def __init__(self, value_maps: dict[str, dict[str, Any]], context: dict[str, Any]):
        super().__init__()
        self._maps = value_maps
        self._reverse = {name: {v: k for k, v in m.items()} for name, m in value_maps.items()}
        self._context = context

    def _translate(self, value: Any, table: Any, reverse: bool) -> Any:
        if isinstance(value, (dict, list)):
            return value  # no map holds one: unchanged, like any value the map does not name
        return self._map(table, reverse).get(value, value)

    def _map(self, table: Any, reverse: bool) -> dict:
        if isinstance(table, dict):
            return {v: k for k, v in table.items()} if reverse else table
        maps = self._reverse if reverse else self._maps
        if table not in maps:
            raise DateFormatError(f"no value map named {table!r}")
        return maps[table]

    @functions.signature({"types": []}, {"types": []})
    def _func_default(self, value, fallback):
        return fallback if value is None else value

    @functions.signature({"types": ["string", "number", "null"]}, {"types": ["string"]})
    def _func_to_iso(self, value, fmt):
        return None if value is None else to_iso(value, fmt)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_from_iso(self, value, fmt):
        return None if value is None else from_iso(value, fmt)

    @functions.signature({"types": []}, {"types": ["string", "object"]})
    def _func_to_remote(self, value, table):
        return self._translate(value, table, reverse=False)

    @functions.signature({"types": []}, {"types": ["string", "object"]})
    def _func_to_unified(self, value, table):
        return self._translate(value, table, reverse=True)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_split(self, value, separator):
        return None if value is None else value.split(separator)

    @functions.signature({"types": ["number", "null"]}, {"types": ["number"]})
    def _func_multiply(self, value, factor):
        return None if value is None else multiply(value, factor)

    @functions.signature({"types": ["string"]})
    def _func_context(self, key):
        return self._context.get(key)

    @functions.signature({"types": ["array", "null"]}, {"types": ["object"]})
    def _func_merge_each(self, items, extra):
        # Inside a projection the parent is out of reach; this brings it in:
        # `invoices[].merge_each(payments, {invoice_id: id})[]`.
        if items is None:
            return None
        for item in items:
            if not isinstance(item, dict):
                raise JMESPathTypeError("merge_each", item, type(item).__name__, ["object"])
        return [{**item, **extra} for item in items]
