"""Money rules: ISO 4217 codes in any case, strict plain-decimal amounts, minor units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.domain.money import (
    currency_exponent,
    normalise_currency,
    parse_amount,
    to_minor_units,
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("usd", "USD"),
        ("USD", "USD"),
        ("Eur", "EUR"),
        ("jpy", "JPY"),
        ("kwd", "KWD"),
        ("chf", "CHF"),
    ],
)
def test_currency_codes_in_any_case_are_upper_cased(raw: str, code: str) -> None:
    assert normalise_currency(raw) == code


@pytest.mark.parametrize(
    "raw",
    [
        "XYZ",
        "US",
        "USDD",
        "",
        " usd",
        "usd ",
        "U$D",
        "XAU",
        "XDR",
        "XTS",
        "XXX",
        840,
        None,
        b"USD",
    ],
)
def test_unknown_or_unchargeable_currencies_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match=r"^currency: "):
        normalise_currency(raw)  # type: ignore[arg-type]  # wrong types on purpose


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("BHD", 3), ("CLF", 4)],
)
def test_exponents_come_from_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["XYZ", "usd", "XAU", ""])
def test_exponent_of_an_unknown_code_is_an_error(code: str) -> None:
    with pytest.raises(ValueError, match=r"^currency: "):
        currency_exponent(code)


@pytest.mark.parametrize(
    ("raw", "amount"),
    [
        ("49.99", "49.99"),
        ("49.990", "49.99"),
        ("49.9", "49.90"),
        ("10", "10.00"),
        ("0.01", "0.01"),
        ("0049.99", "49.99"),
        ("9999999999.99", "9999999999.99"),
        ("1.000000000000000000000000000000000000", "1.00"),
        (49.99, "49.99"),
        (100, "100.00"),
        (0.1, "0.10"),
        (1e3, "1000.00"),  # a JSON number in exponent form is still read by its value
    ],
)
def test_plain_decimals_and_numbers_are_read_by_value(raw: object, amount: str) -> None:
    parsed = parse_amount(raw)
    assert parsed == Decimal(amount)
    assert str(parsed) == amount  # quantised to cents


@pytest.mark.parametrize(
    "raw",
    [
        "1e3",
        "1E+2",
        " 49.99",
        "49.99 ",
        "1_000",
        "+5",
        "-1",
        "-1.00",
        "49,99",
        ".5",
        "5.",
        "",
        "abc",
        "NaN",
        "Infinity",
        "١٢",  # non-ASCII digits
        "0",
        "0.00",
        0,
        -1,
        -0.5,
        "49.999",
        "0.001",
        0.1 + 0.2,  # 0.30000000000000004
        "10000000000",
        "10000000000.00",
        10**10,
        1e300,
        float("inf"),
        float("nan"),
        True,
        False,
        None,
        ["49.99"],
        {"value": "49.99"},
    ],
)
def test_anything_else_is_not_an_amount(raw: object) -> None:
    with pytest.raises(ValueError, match=r"^amount: "):
        parse_amount(raw)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("49.99", "USD", 4999),
        ("10", "JPY", 10),
        ("10.00", "JPY", 10),
        ("1.23", "KWD", 1230),
        ("0.01", "EUR", 1),
    ],
)
def test_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("10.50", "JPY"), ("0.01", "JPY"), ("1.00", "XYZ"), ("1.00", "XAU")],
)
def test_amounts_the_currency_cannot_express_are_errors(amount: str, currency: str) -> None:
    with pytest.raises(ValueError, match=r"^(amount|currency): "):
        to_minor_units(Decimal(amount), currency)
