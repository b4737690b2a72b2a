"""The few JMESPath functions mapping files need beyond JMESPath's own.

| function | what it does |
|---|---|
| `default(value, fallback)` | `value` unless it is null (`||` would also replace false, 0 and "") |
| `to_iso(value, format)` | a provider date -> ISO 8601 (`2024-06-15T12:00:00Z`) |
| `from_iso(value, format)` | ISO 8601 -> a provider date |
| `to_remote(value, map)` | a unified enum value -> the provider's, through a value map; in a request, a value the map does not hold is refused (422 listing those it does) unless the map is in `passthrough` |
| `to_unified(value, map)` | the provider's enum value -> the unified one (the same map, read backwards) |
| `number(value)` | a number, or a string that reads as one; anything else is refused (422 naming the field) where `to_number` would give null |
| `integer(value)` | the same, for a whole number (ids) |
| `to_minor(amount, currency)` | an amount in the currency's units -> its minor units (ISO 4217: JPY 5000 -> 5000, USD 50 -> 5000, KWD 5 -> 5000) |
| `from_minor(amount, currency)` | minor units -> the currency's units; a currency ISO 4217 does not list is refused |
| `split(value, separator)` | a string -> an array of strings (JMESPath has `join` already) |
| `multiply(value, factor)` | a number times a factor, in decimal (percent -> basis points: `100`) |
| `context(key)` | a setting of the caller's connection, in expressions that do not see `context` |
| `merge_each(items, object)` | each object of `items` merged with `object` (its members win): carries a parent's fields into its children |

Date formats: `epoch` (Unix seconds), `epoch_ms` (Unix milliseconds), `date`
(`2024-06-15`), `iso` (ISO 8601, normalised to UTC) and `msjson` (`/Date(1718452800000+0000)/`).
A map is the name of one of the file's `values` maps, or an inline object.
Every function passes null through, so an absent field stays absent.
A value a function cannot convert raises `ConversionError`: in a request, the
gateway answers 422 naming the field that held it (never a silent null); in a
provider record, 502. JMESPath's own `to_number` gives null instead: fit for a
test (`when: to_number(id) != null`), not for a value sent on.
"""

import re
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
from jmespath import functions
from jmespath.exceptions import JMESPathTypeError

_MSJSON = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class ConversionError(ValueError):
    """A value a function cannot convert: the data's fault, not the mapping's."""

    def __init__(self, value: Any, reason: str, accepted: list | None = None):
        super().__init__(reason)
        self.value = value
        self.reason = reason
        self.accepted = accepted  # a value map's or an enum's values, for the caller


class DateFormatError(ValueError):
    """A date format no function knows: the mapping's mistake."""


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
        moment = time.gmtime(day * 86400)  # not strftime's %Y: glibc writes the year 1 as "1"
        if not 1 <= moment.tm_year <= 9999:
            raise ValueError("year is out of range")  # as datetime says of any other date
        date_part = _DAYS[day] = f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}T"
    minute, second = divmod(second, 60)
    return date_part + _MINUTES[minute] + _SECONDS[second]


def to_iso(value: Any, fmt: str) -> str:
    if fmt not in DATE_FORMATS:
        raise DateFormatError(f"unknown date format {fmt!r}")
    try:
        return _to_iso(value, fmt)
    except (ValueError, OverflowError, OSError) as exc:
        raise ConversionError(value, f"{value!r} is not a date in the {fmt} format ({exc})") from None


def _to_iso(value: Any, fmt: str) -> str:
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
            raise ValueError("not a /Date(...)/ value")
        return _iso(datetime.fromtimestamp(int(match.group(1)) / 1000, timezone.utc))
    raise DateFormatError(f"unknown date format {fmt!r}")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _since_epoch(moment: datetime, unit: timedelta) -> int:
    # Integer arithmetic: float timestamp() * 1000 truncates some instants a
    # millisecond short, and int() rounds instants before 1970 the wrong way.
    return (moment - _EPOCH) // unit


def from_iso(value: Any, fmt: str) -> Any:
    if fmt not in DATE_FORMATS:
        raise DateFormatError(f"unknown date format {fmt!r}")
    try:
        return _from_iso(value, fmt)
    except (ValueError, OverflowError) as exc:
        raise ConversionError(value, f"{value!r} is not an ISO 8601 date ({exc})") from None


def _from_iso(value: Any, fmt: str) -> Any:
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


def number(value: Any, whole: bool = False) -> int | float:
    """A number, or a string that reads as one (JSON's syntax: no NaN, no "1_000")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConversionError(value, f"{value!r} is not a number")
    read = value
    if isinstance(value, str):
        try:
            read = msgspec.json.decode(value.strip().encode(), type=int | float)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ConversionError(value, f"{value!r} is not a number") from None
    if whole:
        if isinstance(read, float) and not read.is_integer():
            raise ConversionError(value, f"{value!r} is not a whole number")
        return int(read)
    return read


# ISO 4217's minor unit of each active currency: how many decimals its
# amounts have. Most have 2; these do not. A code the standard does not list
# (or one with no minor unit, like the precious metals) is refused, not guessed.
_EXPONENTS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
    **dict.fromkeys(
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF "
        "CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ "
        "GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK "
        "MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB "
        "SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD "
        "USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL".split(), 2),
}


def minor_exponent(currency: Any) -> int:
    exponent = _EXPONENTS.get(currency) if isinstance(currency, str) else None
    if exponent is None:
        if currency is None:
            raise ConversionError(currency, "an amount in minor units needs its currency, and none is given")
        raise ConversionError(currency, f"{currency!r} is not an ISO 4217 currency code with minor units "
                                        "(e.g. USD, JPY, KWD)")
    return exponent


def _scaled(amount: Any, exponent: int) -> int | float:
    value = Decimal(str(number(amount))).scaleb(exponent)
    return int(value) if value == value.to_integral_value() else float(value)


def to_minor(amount: Any, currency: Any) -> int | float:
    """An amount in a currency's units -> in its minor units: what Panora calls cents."""
    return _scaled(amount, minor_exponent(currency))


def from_minor(amount: Any, currency: Any) -> int | float:
    return _scaled(amount, -minor_exponent(currency))


DATE_FORMATS = ("epoch", "epoch_ms", "date", "iso", "msjson")


def bind_to_iso(fmt: Any) -> Callable[[Any], str | None] | None:
    """`to_iso(value, 'fmt')`, its format a literal, as one call of one argument.

    A template runs it on every record of every list. Called through jmespath
    it costs an argument check and three calls before the conversion itself,
    as much again as the conversion: the check is made here (jmespath's, by
    the exact type), and a whole number of epoch seconds goes straight to the
    tables. None: a format to_iso refuses, left to it to say why."""
    if fmt not in DATE_FORMATS:
        return None
    epoch = fmt == "epoch"

    def bound(value: Any) -> str | None:
        kind = value.__class__
        if epoch and kind is int:
            try:
                return _whole_seconds_iso(value)
            except (ValueError, OverflowError, OSError):
                pass  # out of range: to_iso says so
        if value is None:
            return None
        if kind is not str and kind is not int and kind is not float:
            raise JMESPathTypeError("to_iso", value, functions.TYPES_MAP.get(kind.__name__, "unknown"),
                                    ["string", "number", "null"])
        return to_iso(value, fmt)

    return bound


# Calls of two arguments that gateway/expressions.py makes functions of the
# first at load, where the second is a literal.
BOUND = {"to_iso": bind_to_iso}


class Functions(functions.Functions):
    """Bound once per connection: its value maps and context never change.

    `strict` for what renders a request: there `to_remote` refuses a value its
    map does not hold (unless the map is one of `passthrough`). A provider
    record's values are read leniently: an enum value the provider adds later
    must not fail every list."""

    def __init__(self, value_maps: dict[str, dict[str, Any]], context: dict[str, Any], strict: bool = False,
                 passthrough: frozenset[str] = frozenset()):
        super().__init__()
        self._maps = value_maps
        self._reverse = {name: {v: k for k, v in m.items()} for name, m in value_maps.items()}
        self._context = context
        self._strict = strict
        self._passthrough = passthrough

    def _translate(self, value: Any, table: Any, reverse: bool) -> Any:
        if isinstance(value, (dict, list)):
            return value  # no map holds one: unchanged, like any value the map does not name
        found = self._map(table, reverse)
        if value in found:
            return found[value]
        if self._strict and not reverse and value is not None and not (isinstance(table, str) and table in self._passthrough):
            accepted = list(found)
            raise ConversionError(value, f"{value!r} is not one of the values accepted here: "
                                         f"{', '.join(map(str, accepted))}", accepted)
        return value

    def _map(self, table: Any, reverse: bool) -> dict:
        if isinstance(table, dict):
            return {v: k for k, v in table.items()} if reverse else table
        maps = self._reverse if reverse else self._maps
        if table not in maps:
            raise ValueError(f"no value map named {table!r}")
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

    @functions.signature({"types": ["number", "string", "null"]})
    def _func_number(self, value):
        return None if value is None else number(value)

    @functions.signature({"types": ["number", "string", "null"]})
    def _func_integer(self, value):
        return None if value is None else number(value, whole=True)

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["string", "null"]})
    def _func_to_minor(self, amount, currency):
        return None if amount is None else to_minor(amount, currency)

    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["string", "null"]})
    def _func_from_minor(self, amount, currency):
        return None if amount is None else from_minor(amount, currency)

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
