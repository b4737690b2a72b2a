"""The custom JMESPath functions mapping files use: dates, value maps, default, split, context."""

import random
import time
from datetime import datetime

import jmespath
import pytest
from jmespath.exceptions import JMESPathTypeError

from gateway.functions import DATE_FORMATS, ConversionError, DateFormatError, Functions, from_iso, multiply, to_iso

MAPS = {"contact_status": {"Active": "active", "Inactive": "inactive", "Archived": "archived"}}
CONTEXT = {"company_id": "6650f1a2e4b0c8d9f0aa0001", "region": "eu", "retries": 3}


# Every test here runs in UTC and in two zones far from it (UTC+14, and UTC-10 with
# summer time): a conversion that leans on the local zone anywhere shows up.
ZONES = ("UTC", "Pacific/Kiritimati", "America/Adak")


@pytest.fixture(autouse=True, params=ZONES)
def zone(request, monkeypatch):
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    if request.param != "UTC":
        assert time.localtime(1718452800).tm_gmtoff != 0, f"no zone data for {request.param}: install tzdata"
    yield request.param
    monkeypatch.undo()
    time.tzset()


def search(expression: str, data=None, maps=MAPS, context=CONTEXT):
    options = jmespath.Options(custom_functions=Functions(maps, context))
    return jmespath.search(expression, data if data is not None else {}, options=options)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- to_iso -------------------------------------------------------------------


@pytest.mark.parametrize("value, fmt, expected", [
    (1718452800, "epoch", "2024-06-15T12:00:00Z"),
    ("1718452800", "epoch", "2024-06-15T12:00:00Z"),
    (1718452800.5, "epoch", "2024-06-15T12:00:00.500000Z"),
    (0, "epoch", "1970-01-01T00:00:00Z"),
    (-1, "epoch", "1969-12-31T23:59:59Z"),
    (1718452800000, "epoch_ms", "2024-06-15T12:00:00Z"),
    (1718452800123, "epoch_ms", "2024-06-15T12:00:00.123000Z"),
    ("1718452800123", "epoch_ms", "2024-06-15T12:00:00.123000Z"),
    ("2024-06-15", "date", "2024-06-15T00:00:00Z"),
    ("2024-06-15T23:59:59", "date", "2024-06-15T00:00:00Z"),  # a date format reads the date part only
    ("2024-06-15T12:00:00Z", "iso", "2024-06-15T12:00:00Z"),
    ("2024-06-15T14:00:00+02:00", "iso", "2024-06-15T12:00:00Z"),
    ("2024-06-15T07:00:00-05:00", "iso", "2024-06-15T12:00:00Z"),
    ("2024-06-15T12:00:00", "iso", "2024-06-15T12:00:00Z"),  # no offset: read as UTC
    ("2024-06-15", "iso", "2024-06-15T00:00:00Z"),
    ("2024-06-15T12:00:00.250Z", "iso", "2024-06-15T12:00:00.250000Z"),
    ("/Date(1551399321121+0000)/", "msjson", "2019-03-01T00:15:21.121000Z"),
    ("/Date(1551399321121)/", "msjson", "2019-03-01T00:15:21.121000Z"),
    # The number is UTC milliseconds; the offset only says where it was shown.
    ("/Date(1551399321121+0530)/", "msjson", "2019-03-01T00:15:21.121000Z"),
    ("/Date(1551399321000-0800)/", "msjson", "2019-03-01T00:15:21Z"),
    ("/Date(-1000)/", "msjson", "1969-12-31T23:59:59Z"),
    ("/Date(0+0000)/", "msjson", "1970-01-01T00:00:00Z"),
])
def test_to_iso(value, fmt, expected):
    assert to_iso(value, fmt) == expected
    assert search("to_iso(v, f)", {"v": value, "f": fmt}) == expected


def test_to_iso_of_whole_seconds_matches_strftime_across_days_and_centuries():
    # The epoch path caches the date part per day; every second of a day, and
    # days far apart (more than the cache holds), must read as strftime reads them.
    rng = random.Random(7)
    values = [rng.randrange(-2_000_000_000, 32_000_000_000) for _ in range(6000)]
    values += [86400 * d + s for d in (-1, 0, 19000) for s in (0, 1, 59, 60, 3599, 3600, 86399)]
    for value in values:
        expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
        assert to_iso(value, "epoch") == expected, value
        assert to_iso(float(value), "epoch") == expected, value


@pytest.mark.parametrize("value, fmt, expected", [
    # Near midnight UTC, where a local zone's day differs from UTC's.
    (1718409600, "epoch", "2024-06-15T00:00:00Z"),
    (1718495999, "epoch", "2024-06-15T23:59:59Z"),
    (1718409600.25, "epoch", "2024-06-15T00:00:00.250000Z"),
    (1718495999999, "epoch_ms", "2024-06-15T23:59:59.999000Z"),
    ("2024-06-15", "date", "2024-06-15T00:00:00Z"),
    ("2024-06-15T00:30:00", "iso", "2024-06-15T00:30:00Z"),
    ("/Date(1718409600000)/", "msjson", "2024-06-15T00:00:00Z"),
])
def test_to_iso_does_not_depend_on_the_local_zone(value, fmt, expected):
    assert to_iso(value, fmt) == expected


@pytest.mark.parametrize("value, fmt, expected", [
    ("2024-06-15T00:00:00", "epoch", 1718409600),  # no offset: UTC, not the local zone
    ("2024-06-15T00:00:00Z", "epoch", 1718409600),
    ("2024-06-15T23:59:59.999", "epoch_ms", 1718495999999),
    ("2024-06-15", "epoch", 1718409600),
    ("2024-06-15T23:30:00", "date", "2024-06-15"),
    ("2024-06-15T00:30:00", "iso", "2024-06-15T00:30:00Z"),
    ("2024-06-15T00:00:00", "msjson", "/Date(1718409600000+0000)/"),
    ("2024-03-10T10:30:00Z", "epoch", 1710066600),  # Adak's summer time starts that day
])
def test_from_iso_does_not_depend_on_the_local_zone(value, fmt, expected):
    assert from_iso(value, fmt) == expected


def test_to_iso_always_answers_utc_with_z():
    for fmt, value in [("epoch", 1), ("epoch_ms", 1), ("date", "2024-01-01"), ("iso", "2024-01-01T01:00:00+01:00"),
                       ("msjson", "/Date(1+0100)/")]:
        out = to_iso(value, fmt)
        assert out.endswith("Z") and "+" not in out
        assert moment(out).utcoffset().total_seconds() == 0


@pytest.mark.parametrize("value, fmt", [
    ("1551399321121", "msjson"),
    ("Date(1551399321121)", "msjson"),
    ("/Date(abc)/", "msjson"),
    ("/Date(1551399321121+00)/", "msjson"),
    ("not a number", "epoch"),
    ("not a number", "epoch_ms"),
    ("2024-13-01", "date"),
    ("yesterday", "iso"),
])
def test_to_iso_rejects_values_not_in_the_format(value, fmt):
    with pytest.raises(ValueError):
        to_iso(value, fmt)


def test_to_iso_rejects_an_unknown_format_naming_it():
    with pytest.raises(DateFormatError, match="'unix'"):
        to_iso(1, "unix")
    with pytest.raises(DateFormatError, match="'unix'"):
        search("to_iso(`1`, 'unix')")


def test_to_iso_passes_null_through():
    assert search("to_iso(missing, 'epoch')") is None
    assert search("to_iso(`null`, 'msjson')") is None


@pytest.mark.parametrize("literal", ["`true`", "`[1]`", "`{}`"])
def test_to_iso_refuses_non_scalar_values(literal):
    with pytest.raises(JMESPathTypeError):
        search(f"to_iso({literal}, 'epoch')")


def test_to_iso_format_must_be_a_string():
    with pytest.raises(JMESPathTypeError):
        search("to_iso(`1`, `1`)")


# -- from_iso -----------------------------------------------------------------


@pytest.mark.parametrize("value, fmt, expected", [
    ("2024-06-15T12:00:00Z", "epoch", 1718452800),
    ("2024-06-15T14:00:00+02:00", "epoch", 1718452800),
    ("2024-06-15T12:00:00.999Z", "epoch", 1718452800),  # whole seconds, rounded down
    ("2024-06-15T12:00:00Z", "epoch_ms", 1718452800000),
    ("2024-06-15T12:00:00.123Z", "epoch_ms", 1718452800123),
    ("2024-06-15T12:00:00", "epoch_ms", 1718452800000),  # no offset: UTC
    ("2024-06-15T12:00:00Z", "date", "2024-06-15"),
    ("2024-06-15", "date", "2024-06-15"),
    ("2024-06-15T23:30:00-02:00", "date", "2024-06-15"),  # the day as written, not shifted to UTC
    ("2024-06-15T00:00:00+09:00", "date", "2024-06-15"),
    ("2024-06-15T14:00:00+02:00", "iso", "2024-06-15T12:00:00Z"),
    ("2024-06-15T12:00:00Z", "iso", "2024-06-15T12:00:00Z"),
    ("2019-03-01T00:15:21.121Z", "msjson", "/Date(1551399321121+0000)/"),
    ("2019-03-01T05:45:21.121+05:30", "msjson", "/Date(1551399321121+0000)/"),
    ("1970-01-01T00:00:00Z", "msjson", "/Date(0+0000)/"),
])
def test_from_iso(value, fmt, expected):
    assert from_iso(value, fmt) == expected
    assert search("from_iso(v, f)", {"v": value, "f": fmt}) == expected


@pytest.mark.parametrize("value, fmt, expected", [
    # Each of these came out a millisecond short when computed through float timestamps.
    ("2004-03-15T07:55:47.472Z", "epoch_ms", 1079337347472),
    ("2039-03-08T19:46:13.411Z", "epoch_ms", 2183226373411),
    ("2039-03-30T06:14:24.549Z", "msjson", "/Date(2185078464549+0000)/"),
    # Before 1970 a Unix time rounds down (towards the past), not towards zero.
    ("1969-12-31T23:59:59.500Z", "epoch", -1),
    ("1969-12-31T23:59:59.500Z", "epoch_ms", -500),
])
def test_from_iso_is_exact_to_the_millisecond(value, fmt, expected):
    assert from_iso(value, fmt) == expected


def test_epoch_ms_and_msjson_round_trip_exactly():
    rng = random.Random(20240615)
    for _ in range(5000):
        ms = rng.randint(0, 4102444800000)  # 1970 .. 2100
        assert from_iso(to_iso(ms, "epoch_ms"), "epoch_ms") == ms
        msjson = f"/Date({ms}+0000)/"
        assert from_iso(to_iso(msjson, "msjson"), "msjson") == msjson


@pytest.mark.parametrize("fmt", DATE_FORMATS)
def test_every_format_round_trips_through_iso(fmt):
    iso = "2024-06-15T00:00:00Z"  # midnight, so the date format loses nothing
    assert to_iso(from_iso(iso, fmt), fmt) == iso


def test_from_iso_rejects_unknown_format_and_non_iso_values():
    with pytest.raises(DateFormatError, match="'unix'"):
        from_iso("2024-06-15T12:00:00Z", "unix")
    with pytest.raises(ValueError):
        from_iso("15/06/2024", "epoch")


def test_from_iso_passes_null_through_and_refuses_numbers():
    assert search("from_iso(missing, 'epoch')") is None
    with pytest.raises(JMESPathTypeError):
        search("from_iso(`1718452800`, 'epoch')")


# -- value maps ---------------------------------------------------------------


def test_to_remote_through_a_named_map():
    assert search("to_remote(s, 'contact_status')", {"s": "Active"}) == "active"
    assert search("to_remote(s, 'contact_status')", {"s": "Archived"}) == "archived"


def test_to_unified_reads_the_named_map_backwards():
    assert search("to_unified(s, 'contact_status')", {"s": "inactive"}) == "Inactive"


def test_inline_maps():
    assert search("to_remote(s, `{\"Paid\": \"PAID\", \"Draft\": \"DRAFT\"}`)", {"s": "Paid"}) == "PAID"
    assert search("to_unified(s, `{\"Paid\": \"PAID\", \"Draft\": \"DRAFT\"}`)", {"s": "DRAFT"}) == "Draft"
    assert search("to_remote(`1`, `{\"1\": \"x\"}`)") == 1  # keys are strings: a number is not found


def test_values_outside_the_map_pass_through_unchanged():
    assert search("to_remote(s, 'contact_status')", {"s": "Suspended"}) == "Suspended"
    assert search("to_unified(s, 'contact_status')", {"s": "Active"}) == "Active"  # already unified
    assert search("to_remote(missing, 'contact_status')") is None
    assert search("to_unified(missing, 'contact_status')") is None
    assert search("to_remote(`true`, `{}`)") is True


def test_maps_may_hold_non_string_provider_values():
    maps = {"kind": {"customer": 1, "vendor": 2}}
    assert search("to_remote(k, 'kind')", {"k": "vendor"}, maps=maps) == 2
    assert search("to_unified(k, 'kind')", {"k": 1}, maps=maps) == "customer"


def test_an_unknown_map_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'no_such_map'"):
        search("to_remote(s, 'no_such_map')", {"s": "Active"})
    with pytest.raises(ValueError, match="'no_such_map'"):
        search("to_unified(s, 'no_such_map')", {"s": "active"})


def test_map_argument_must_be_a_name_or_an_object():
    with pytest.raises(JMESPathTypeError):
        search("to_remote(s, `[1]`)", {"s": "Active"})


def test_maps_are_per_connection():
    other = {"contact_status": {"Active": "ENABLED"}}
    assert search("to_remote(s, 'contact_status')", {"s": "Active"}, maps=other) == "ENABLED"
    assert search("to_remote(s, 'contact_status')", {"s": "Active"}) == "active"


# -- default, split, context --------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    ({}, "fallback"),
    ({"v": None}, "fallback"),
    ({"v": False}, False),  # unlike ||, false, 0 and "" are values
    ({"v": 0}, 0),
    ({"v": ""}, ""),
    ({"v": []}, []),
    ({"v": "set"}, "set"),
])
def test_default_replaces_only_null(data, expected):
    assert search("default(v, 'fallback')", data) == expected


def test_default_fallback_can_be_any_type():
    assert search("default(v, `[1, 2]`)") == [1, 2]
    assert search("default(v, `null`)") is None


@pytest.mark.parametrize("value, separator, expected", [
    ("a,b,c", ",", ["a", "b", "c"]),
    ("a", ",", ["a"]),
    ("", ",", [""]),
    ("a, b", ", ", ["a", "b"]),
    ("x::y", "::", ["x", "y"]),
])
def test_split(value, separator, expected):
    assert search("split(v, s)", {"v": value, "s": separator}) == expected


def test_split_passes_null_and_refuses_non_strings():
    assert search("split(missing, ',')") is None
    with pytest.raises(JMESPathTypeError):
        search("split(`1`, ',')")
    with pytest.raises(JMESPathTypeError):
        search("split('a', `1`)")


def test_split_and_join_are_inverse():
    assert search("join(',', split(v, ','))", {"v": "a,b"}) == "a,b"


def test_context_reads_the_connection_settings():
    assert search("context('company_id')") == "6650f1a2e4b0c8d9f0aa0001"
    assert search("context('retries')") == 3
    assert search("context('missing')") is None
    assert search("context('region')", context={"region": "us"}) == "us"


def test_context_works_inside_projections_where_the_document_is_elsewhere():
    data = {"rows": [{"id": 1}, {"id": 2}]}
    assert search("rows[*].{id: id, company: context('company_id')}", data) == [
        {"id": 1, "company": "6650f1a2e4b0c8d9f0aa0001"},
        {"id": 2, "company": "6650f1a2e4b0c8d9f0aa0001"},
    ]


def test_context_key_must_be_a_string():
    with pytest.raises(JMESPathTypeError):
        search("context(`1`)")


@pytest.mark.parametrize("value, factor, expected", [
    (0.07, 100, 7), (1999, 0.01, 19.99), (12.5, 100, 1250), (3, 3, 9), (-0.1, 10, -1), (0.1, 0.1, 0.01), (5, 0.5, 2.5),
])
def test_multiply_is_decimal_and_whole_results_are_ints(value, factor, expected):
    result = multiply(value, factor)
    assert result == expected and type(result) is type(expected)
    assert search("multiply(v, f)", {"v": value, "f": factor}) == expected


def test_multiply_passes_null_through_and_needs_numbers():
    assert search("multiply(missing, `100`)") is None
    for bad in ("multiply('1', `100`)", "multiply(`1`, '100')", "multiply(`1`, missing)", "multiply(`true`, `1`)"):
        with pytest.raises(JMESPathTypeError):
            search(bad)


def test_merge_each_carries_an_object_into_each_item_and_lets_it_win():
    data = {"items": [{"a": 1, "b": 1}, {"b": 2}], "id": 7}
    assert search("merge_each(items, {a: id})", data) == [{"a": 7, "b": 1}, {"a": 7, "b": 2}]
    assert data["items"] == [{"a": 1, "b": 1}, {"b": 2}], "the record itself is left as it was"
    assert search("merge_each(missing, {a: id})", data) is None
    assert search("merge_each(`[]`, {a: id})", data) == []
    for bad in ("merge_each(`[1]`, {a: id})", "merge_each(`[{}, null]`, {a: id})", "merge_each(items, `3`)"):
        with pytest.raises(JMESPathTypeError):
            search(bad, data)


def test_jmespath_builtins_still_work_beside_the_custom_ones():
    assert search("length(v)", {"v": [1, 2]}) == 2
    assert search("to_string(`1`)") == "1"
    assert search("to_number('2.5')") == 2.5



# -- minor units by currency (ISO 4217) ---------------------------------------------


@pytest.mark.parametrize("units, currency, minor", [
    (5000, "JPY", 5000),  # the yen has no minor unit
    (50, "USD", 5000),
    (0.07, "USD", 7),  # decimal, not binary floating point
    (148062.76, "NZD", 14806276),
    (5, "KWD", 5000),  # three decimals
    (1.5, "BHD", 1500),
    (1, "CLF", 10000),  # four
    (-2.5, "EUR", -250),
    (3.755, "USD", 375.5),  # more decimals than the currency has: kept, not rounded away
])
def test_to_minor_and_from_minor_follow_the_currencys_minor_unit(units, currency, minor):
    assert search("to_minor(a, c)", {"a": units, "c": currency}) == minor
    assert search("from_minor(m, c)", {"m": minor, "c": currency}) == units
    assert isinstance(search("to_minor(a, c)", {"a": units, "c": currency}), type(minor))


def test_the_same_minor_amount_is_a_different_sum_in_each_currency():
    assert [search("from_minor(`5000`, c)", {"c": c}) for c in ("JPY", "USD", "KWD")] == [5000, 50, 5]


@pytest.mark.parametrize("currency", ["XAU", "ZZZ", "usd", "", None])
def test_a_currency_iso_4217_does_not_list_with_minor_units_is_refused_not_guessed(currency):
    with pytest.raises(ConversionError) as info:
        search("from_minor(`100`, c)", {"c": currency})
    assert info.value.value == currency


def test_minor_unit_functions_pass_null_amounts_through_and_read_numeric_strings():
    assert search("to_minor(missing, 'USD')") is None
    assert search("from_minor(missing, missing)") is None
    assert search("from_minor('1050', 'USD')") == 10.5
    with pytest.raises(ConversionError):
        search("from_minor('ten', 'USD')")


# -- number, integer: refuse what they cannot read ----------------------------------------


@pytest.mark.parametrize("expression, value, expected", [
    ("number(v)", "1.2", 1.2), ("number(v)", 3, 3), ("number(v)", " 7 ", 7), ("number(v)", "-0.5", -0.5),
    ("integer(v)", "201", 201), ("integer(v)", 12.0, 12), ("number(v)", None, None), ("integer(v)", None, None),
])
def test_number_and_integer_read_numbers(expression, value, expected):
    assert search(expression, {"v": value}) == expected


@pytest.mark.parametrize("expression, value", [
    ("number(v)", "801f9ede-c698-4e66-a7fc-48d19eebaa4f"), ("number(v)", ""), ("number(v)", "NaN"),
    ("number(v)", "1_000"), ("integer(v)", "1.5"), ("integer(v)", 2.5), ("integer(v)", "tag-1"),
])
def test_number_and_integer_refuse_what_to_number_would_turn_into_null(expression, value):
    with pytest.raises(ConversionError) as info:
        search(expression, {"v": value})
    assert info.value.value == value


# -- to_remote in a request: a value the map does not hold is refused -----------------------


def strict(expression: str, data: dict, passthrough=frozenset()):
    options = jmespath.Options(custom_functions=Functions(MAPS, CONTEXT, strict=True, passthrough=passthrough))
    return jmespath.search(expression, data, options=options)


def test_a_strict_to_remote_refuses_an_unknown_value_listing_the_accepted_ones():
    assert strict("to_remote(s, 'contact_status')", {"s": "Active"}) == "active"
    assert strict("to_remote(s, 'contact_status')", {}) is None
    with pytest.raises(ConversionError) as info:
        strict("to_remote(s, 'contact_status')", {"s": "Suspended"})
    assert info.value.value == "Suspended" and info.value.accepted == ["Active", "Inactive", "Archived"]
    with pytest.raises(ConversionError):
        strict("to_remote(s, `{\"A\": \"a\"}`)", {"s": "B"})  # inline maps too


def test_a_passthrough_map_and_reading_backwards_stay_lenient():
    assert strict("to_remote(s, 'contact_status')", {"s": "Suspended"}, frozenset({"contact_status"})) == "Suspended"
    assert strict("to_unified(s, 'contact_status')", {"s": "suspended"}) == "suspended"
    assert search("to_remote(s, 'contact_status')", {"s": "Suspended"}) == "Suspended"  # a record's values: lenient


# -- to_iso(value, 'format') bound at load: what every list's records run ---------------------


def compiled(source: str, value):
    from gateway.expressions import compile_expression

    options = jmespath.Options(custom_functions=Functions(MAPS, CONTEXT))
    return compile_expression(source, "$.x").search({"v": value}, options=options)


@pytest.mark.parametrize("value", [
    0, 1718409600, -1, 2**40, 10**20, -(10**20), 1718409600.25, 1718409600.0, "1718409600", "", "x", None,
    True, False, [1], {"a": 1}, "/Date(1718409600000)/", "2024-06-15", "2024-06-15T00:30:00+09:00",
])
@pytest.mark.parametrize("fmt", DATE_FORMATS)
def test_a_bound_to_iso_answers_and_refuses_as_jmespaths_call_does(value, fmt):
    """The template's one-argument form against jmespath's own call of the function."""
    def outcome(run):
        try:
            return "value", run()
        except (JMESPathTypeError, ConversionError) as exc:
            return type(exc).__name__, str(exc)

    expected = outcome(lambda: search(f"to_iso(v, '{fmt}')", {"v": value}))
    assert outcome(lambda: compiled(f"to_iso(v, '{fmt}')", value)) == expected


def test_an_unknown_format_is_not_bound_and_refused_as_before():
    with pytest.raises(DateFormatError, match="'unix'"):
        compiled("to_iso(v, 'unix')", 1)
