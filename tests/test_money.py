from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbudget.errors import InvalidAmountError
from llmbudget.money import UNITS_PER_DOLLAR, cost_to_units, from_units, to_money, to_units


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, Decimal("0.1")),
        (10, Decimal(10)),
        ("2.50", Decimal("2.50")),
        (" 3 ", Decimal(3)),
        (Decimal("0.000001"), Decimal("0.000001")),
        (1e-7, Decimal("1E-7")),
        (-0.0, Decimal(0)),
    ],
)
def test_to_money_is_exact(value: object, expected: Decimal) -> None:
    assert to_money(value) == expected


def test_float_goes_through_repr_not_binary() -> None:
    assert to_money(0.1) + to_money(0.2) == Decimal("0.3")
    # The binary expansion is not what the user meant.
    assert to_money(0.1) != Decimal(0.1)  # noqa: RUF032


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), float("-inf"), "nan", "Infinity", -1, "-0.01", True, False,
     None, "abc", [], {}, b"1", complex(1, 0), Decimal("NaN"), Decimal("-Infinity")],
)  # fmt: skip
def test_bad_money_is_refused_with_a_typed_value_error(bad: object) -> None:
    with pytest.raises(InvalidAmountError) as info:
        to_money(bad)
    assert isinstance(info.value, ValueError)


def test_units_round_trip_and_precision() -> None:
    assert to_units("1") == UNITS_PER_DOLLAR
    assert to_units("0.000000001") == 1
    assert from_units(1_500_000_000) == Decimal("1.5")
    assert str(from_units(100 * UNITS_PER_DOLLAR)) == "100"
    with pytest.raises(InvalidAmountError, match="finer"):
        to_units("0.0000000001")


def test_costs_round_up_never_down() -> None:
    # 37.5 nano-dollars (one token of a $0.0375/Mtok model) is recorded as 38, never 37.
    assert cost_to_units(Decimal("0.0000000375")) == 38
    assert cost_to_units(Decimal("0.000000001")) == 1
    assert cost_to_units(0) == 0


def test_too_large_is_refused() -> None:
    with pytest.raises(InvalidAmountError, match="larger"):
        to_units(10**10)


@given(st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False))
def test_units_are_lossless_for_nano_precision(value: Decimal) -> None:
    assert from_units(to_units(value)) == value


def test_a_million_micro_charges_sum_to_exactly_one_dollar() -> None:
    total = sum(cost_to_units("0.000001") for _ in range(1_000_000))
    assert from_units(total) == Decimal(1)


def test_exact_whatever_the_callers_decimal_context() -> None:
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 6  # an application may lower it; money must not care
        assert cost_to_units("1.234561234") == 1_234_561_234
        assert to_units("123456.789012345") == 123_456_789_012_345
        assert from_units(123_456_789_012_345) == Decimal("123456.789012345")
        assert from_units(9_000_000_000_000_000_000) == Decimal(9_000_000_000)
    # At the default 28 digits, rounding must not happen before the ceiling either.
    assert cost_to_units(Decimal("1000.0000000000000000000000000001")) == 1_000_000_000_001


def test_absurdly_large_amounts_are_a_value_error_not_an_overflow() -> None:
    for huge in ("1e999999", "1e30", Decimal("9.9E+999999")):
        with pytest.raises(InvalidAmountError):
            to_units(huge)
        with pytest.raises(InvalidAmountError):
            cost_to_units(huge)
