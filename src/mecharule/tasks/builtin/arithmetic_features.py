"""Seed features of the arithmetic task, vectorised over the prompt table (columns a, b, operator).

Not-applicable convention: operator-specific features (carries in ``a + b``, borrows in ``a - b``,
partial-product carries of ``a * b``, remainders of ``a / b``) are NaN on prompts of other
operators. NaN is kept as "missing" all the way into the rule extractor (no median fill).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mecharule.features.base import Feature, FeatureKind
from mecharule.tasks.builtin.arithmetic import OP_NAMES, true_result

MAX_DIGITS = 7


def _digits(values: np.ndarray) -> np.ndarray:
    """[n, MAX_DIGITS] decimal digits of |values|, least significant first."""
    v = np.abs(values.astype(np.int64))
    return np.stack([(v // 10**i) % 10 for i in range(MAX_DIGITS)], axis=1)


def digit_count(values: np.ndarray) -> np.ndarray:
    v = np.abs(values.astype(np.int64))
    return np.where(v == 0, 1, np.floor(np.log10(np.maximum(v, 1))).astype(np.int64) + 1)


def addition_carries(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of column carries when adding |a| and |b| on paper."""
    da, db = _digits(a), _digits(b)
    carry = np.zeros(len(a), dtype=np.int64)
    count = np.zeros(len(a), dtype=np.int64)
    for i in range(MAX_DIGITS):
        carry = (da[:, i] + db[:, i] + carry) >= 10
        count += carry
        carry = carry.astype(np.int64)
    return count


def subtraction_borrows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Borrows when subtracting the smaller magnitude from the larger one on paper."""
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    dh, dl = _digits(hi), _digits(lo)
    borrow = np.zeros(len(a), dtype=np.int64)
    count = np.zeros(len(a), dtype=np.int64)
    for i in range(MAX_DIGITS):
        need = dh[:, i] - borrow < dl[:, i]
        count += need
        borrow = need.astype(np.int64)
    return count


def multiplication_partial_carries(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Carries made while forming the partial products a x (each digit of b), digit by digit."""
    da, db = _digits(a), _digits(b)
    na, nb = digit_count(a), digit_count(b)
    count = np.zeros(len(a), dtype=np.int64)
    for j in range(MAX_DIGITS):
        carry = np.zeros(len(a), dtype=np.int64)
        active_row = j < nb
        for i in range(MAX_DIGITS):
            total = da[:, i] * db[:, j] + carry
            carry = total // 10
            count += ((carry > 0) & active_row & (i < na)).astype(np.int64)
    return count


def _share_digit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    da, db = _digits(a), _digits(b)
    na, nb = digit_count(a), digit_count(b)
    positions = np.arange(MAX_DIGITS)
    valid_a = positions[None, :] < na[:, None]
    valid_b = positions[None, :] < nb[:, None]
    shared = np.zeros(len(a), dtype=bool)
    for d in range(10):
        shared |= ((da == d) & valid_a).any(1) & ((db == d) & valid_b).any(1)
    return shared


def _only(op: str, table: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    return np.where(table["operator"].to_numpy() == op, values.astype(np.float64), np.nan)


def _ab(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return table["a"].to_numpy(np.int64), table["b"].to_numpy(np.int64)


def _result(table: pd.DataFrame) -> np.ndarray:
    a, b = _ab(table)
    return true_result(a, b, table["operator"].to_numpy())


def _gcd_gt1(table: pd.DataFrame) -> np.ndarray:
    a, b = _ab(table)
    return (np.gcd(a, b) > 1).astype(float)


def _divides(table: pd.DataFrame) -> np.ndarray:
    a, b = _ab(table)
    out = np.zeros(len(a))
    ok = (a != 0) & (b != 0)
    out[ok] = ((a[ok] % b[ok] == 0) | (b[ok] % a[ok] == 0)).astype(float)
    return out


def _remainder(table: pd.DataFrame) -> np.ndarray:
    a, b = _ab(table)
    rem = np.where(b != 0, np.abs(a) % np.maximum(np.abs(b), 1), 0)
    return _only("/", table, rem)


Spec = tuple[str, str, FeatureKind, Callable[[pd.DataFrame], np.ndarray], str]


def _operator_indicator(op: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def indicator(table: pd.DataFrame) -> np.ndarray:
        return (table["operator"].to_numpy() == op).astype(float)

    return indicator


def _operator_specs(operators: str) -> list[Spec]:
    specs: list[Spec] = []
    for op in operators:
        specs.append(
            (
                f"op_is_{OP_NAMES[op]}",
                f"operator is {op}",
                "binary",
                _operator_indicator(op),
                "",
            )
        )
    return specs


def _operand_specs() -> list[Spec]:
    return [
        ("a", "a", "numeric", lambda t: t["a"].to_numpy(float), ""),
        ("b", "b", "numeric", lambda t: t["b"].to_numpy(float), ""),
        ("digits_a", "digits of a", "count", lambda t: digit_count(_ab(t)[0]).astype(float), ""),
        ("digits_b", "digits of b", "count", lambda t: digit_count(_ab(t)[1]).astype(float), ""),
        ("ones_a", "last digit of a", "count", lambda t: (_ab(t)[0] % 10).astype(float), ""),
        ("ones_b", "last digit of b", "count", lambda t: (_ab(t)[1] % 10).astype(float), ""),
        ("operands_equal", "a equals b", "binary", lambda t: (t["a"] == t["b"]).to_numpy(float), ""),
        ("a_greater", "a is greater than b", "binary", lambda t: (t["a"] > t["b"]).to_numpy(float), ""),
        (
            "same_digit_count",
            "a and b have the same digit count",
            "binary",
            lambda t: (digit_count(_ab(t)[0]) == digit_count(_ab(t)[1])).astype(float),
            "",
        ),
        ("a_even", "a is even", "binary", lambda t: (_ab(t)[0] % 2 == 0).astype(float), ""),
        ("b_even", "b is even", "binary", lambda t: (_ab(t)[1] % 2 == 0).astype(float), ""),
        ("a_is_zero", "a is 0", "binary", lambda t: (_ab(t)[0] == 0).astype(float), ""),
        ("b_is_zero", "b is 0", "binary", lambda t: (_ab(t)[1] == 0).astype(float), ""),
        ("b_is_one", "b is 1", "binary", lambda t: (_ab(t)[1] == 1).astype(float), ""),
        (
            "a_multiple_of_10",
            "a is a multiple of 10",
            "binary",
            lambda t: (_ab(t)[0] % 10 == 0).astype(float),
            "",
        ),
        (
            "b_multiple_of_10",
            "b is a multiple of 10",
            "binary",
            lambda t: (_ab(t)[1] % 10 == 0).astype(float),
            "",
        ),
        ("share_digit", "a and b share a digit", "binary", lambda t: _share_digit(*_ab(t)).astype(float), ""),
        ("gcd_gt_1", "a and b have a common factor > 1", "binary", _gcd_gt1, ""),
        ("divides_evenly", "one operand divides the other", "binary", _divides, ""),
    ]


def _operation_specs(operators: str) -> list[Spec]:
    specs: list[Spec] = [
        ("result", "the true result", "numeric", lambda t: _result(t).astype(float), ""),
        (
            "result_digits",
            "digits of the result",
            "count",
            lambda t: digit_count(_result(t)).astype(float),
            "",
        ),
        ("result_negative", "the result is negative", "binary", lambda t: (_result(t) < 0).astype(float), ""),
    ]
    if "+" in operators:
        specs.append(
            (
                "carries_add",
                "carries in a + b",
                "count",
                lambda t: _only("+", t, addition_carries(*_ab(t))),
                "operator is not +",
            )
        )
    if "-" in operators:
        specs.append(
            (
                "borrows_sub",
                "borrows in a - b",
                "count",
                lambda t: _only("-", t, subtraction_borrows(*_ab(t))),
                "operator is not -",
            )
        )
    if "*" in operators:
        specs.append(
            (
                "carries_mul",
                "partial-product carries in a * b",
                "count",
                lambda t: _only("*", t, multiplication_partial_carries(*_ab(t))),
                "operator is not *",
            )
        )
        specs.append(
            (
                "ones_product_carries",
                "last digits of a and b multiply to >= 10",
                "binary",
                lambda t: _only("*", t, ((_ab(t)[0] % 10) * (_ab(t)[1] % 10) >= 10)),
                "operator is not *",
            )
        )
    if "/" in operators:
        specs.append(("remainder_div", "remainder of a / b", "count", _remainder, "operator is not /"))
    return specs


def arithmetic_features(operators: str) -> list[Feature]:
    """All seed features for the given operator set, in a fixed order."""
    specs = _operator_specs(operators) + _operand_specs() + _operation_specs(operators)
    return [
        Feature(name=name, description=desc, compute=fn, kind=kind, not_applicable=na)
        for name, desc, kind, fn, na in specs
    ]
