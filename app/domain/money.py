"""Money rules: ISO 4217 currencies, strict plain-decimal amounts, minor units. Plain Python, no frameworks."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType

from iso4217 import Currency

MAX_AMOUNT = Decimal(10_000_000_000)  # the ledger's NUMERIC(12,2) holds values below 10^10
CENT = Decimal("0.01")

# Code -> minor-unit exponent, built once from the maintained ISO 4217 list: this dict is the
# cache every lookup on the hot path hits. Codes without a minor unit (precious metals such as
# XAU, fund units such as XDR, the testing code XTS; "N.A." in the standard) are left out on
# purpose: an amount in them cannot be expressed in minor units, so they are not chargeable.
EXPONENTS: MappingProxyType[str, int] = MappingProxyType(
    {currency.code: currency.exponent for currency in Currency if currency.exponent is not None}
)


def normalise_currency(raw: str) -> str:
    """The upper-case ISO 4217 code for `raw` in any case (`usd` -> `USD`); ValueError otherwise."""
    if isinstance(raw, str):
        code = raw.upper()
        if code in EXPONENTS:
            return code
    raise ValueError("currency: not an ISO 4217 code with a minor unit")


def currency_exponent(code: str) -> int:
    """How many decimal places the currency's minor unit has (JPY 0, USD 2, KWD 3)."""
    try:
        return EXPONENTS[code]
    except (KeyError, TypeError):
        raise ValueError("currency: not an ISO 4217 code with a minor unit") from None


def parse_amount(raw: object) -> Decimal:
    """A positive amount below 10^10 with at most 2 significant decimal places, quantised to cents.

    `raw` is a JSON string holding a plain decimal (`"49.99"`, `"49.990"`, `"10"`) or a JSON
    number (read by its decimal value: floats through their shortest repr, so 49.99 is 49.99).
    """
    amount = _decimal_of(raw)
    if amount is None:
        raise ValueError("amount: not a plain decimal")
    if amount <= 0:
        raise ValueError("amount: must be greater than 0")
    if amount >= MAX_AMOUNT:
        raise ValueError("amount: must be below 10000000000")
    cents = amount.quantize(CENT)  # safe: below 10^10 the result has at most 12 digits
    if cents != amount:
        raise ValueError("amount: more than 2 decimal places")
    return cents


def _decimal_of(raw: object) -> Decimal | None:
    """The exact decimal value of a plain-decimal string or a finite JSON number; None otherwise."""
    if isinstance(raw, str):
        return Decimal(raw) if _is_plain_decimal(raw) else None
    if type(raw) is int:  # not isinstance: a JSON true/false (bool) is not a number
        return Decimal(raw)
    if isinstance(raw, float):
        amount = Decimal(repr(raw))  # the shortest repr is the JSON text's value: 49.99, not 49.98999...
        return amount if amount.is_finite() else None
    return None


def _is_plain_decimal(text: str) -> bool:
    """Digits with an optional "." and fraction; nothing else (no exponent, sign, spaces or
    underscores, which Decimal() would accept). String methods: cheaper than a regex here."""
    whole, dot, fraction = text.partition(".")
    return text.isascii() and whole.isdigit() and (not dot or fraction.isdigit())


def to_minor_units(amount: Decimal, currency: str) -> int:
    """The amount in the currency's minor units (49.99 USD -> 4999, 10 JPY -> 10); ValueError if
    the amount has a fraction the currency cannot express (10.50 JPY)."""
    minor = amount.scaleb(currency_exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"amount: not representable in {currency} minor units")
    return int(minor)
