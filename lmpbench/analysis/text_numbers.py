"""Parsing lines of whitespace-separated numbers from bytes, compiled by numba.

Why not ``float()``: a LAMMPS text dump is mostly numbers, and Python's per-token parsing is
what made reading 20,000-atom frames slow. Exactness: a decimal with at most 15 significant
digits and a power of ten within 1e22 is an exact integer times an exact power of ten, so one
multiplication or division gives the correctly rounded double, the same as ``strtod``
(Clinger's fast path). Numbers outside that (e.g. %.17g output) are reported, and the caller
parses that block with Python's exact ``float``. ``nan``, ``inf`` and their signed forms are
read as LAMMPS prints them (a run that blew up).
"""

from __future__ import annotations

import numpy as np
from numba import njit

OK, NEED_MORE, MALFORMED, INEXACT = 0, 1, 2, 3
_POW10 = np.array([10.0**k for k in range(23)])
_SPACE, _TAB, _CR, _NEWLINE = 32, 9, 13, 10


@njit(cache=True)
def _word_value(buf, pos, n):
    """nan / inf words (any case, any sign handled by the caller): (value, end, ok)."""
    end = pos
    while end < n and buf[end] != _SPACE and buf[end] != _TAB and buf[end] != _NEWLINE and buf[end] != _CR:
        end += 1
    length = end - pos
    c0 = buf[pos] | 32  # lower case
    if length == 3 and c0 == 110 and (buf[pos + 1] | 32) == 97 and (buf[pos + 2] | 32) == 110:  # nan
        return np.nan, end, True
    if (length == 3 or length == 8) and c0 == 105 and (buf[pos + 1] | 32) == 110 and (buf[pos + 2] | 32) == 102:  # inf(inity)
        return np.inf, end, True
    return 0.0, end, False


@njit(cache=True)
def parse_rows(buf, start, rows, columns, out):
    """Parse ``rows`` lines of ``columns`` numbers from ``buf[start:]`` into ``out``.

    Returns (end, status): end is just after the last newline read; status OK, NEED_MORE (the
    buffer ended first, maybe mid-number), MALFORMED (a token that is not a number, or a line
    with too few or too many numbers; end is where) or INEXACT (a number outside the exact
    fast path; parse this block another way).
    """
    pos = start
    n = len(buf)
    status = OK
    for row in range(rows):
        for col in range(columns):
            while pos < n and (buf[pos] == _SPACE or buf[pos] == _TAB):
                pos += 1
            if pos >= n:
                return pos, NEED_MORE
            if buf[pos] == _NEWLINE or buf[pos] == _CR:
                return pos, MALFORMED
            sign = 1.0
            if buf[pos] == 45:  # '-'
                sign = -1.0
                pos += 1
            elif buf[pos] == 43:  # '+'
                pos += 1
            if pos >= n:
                return pos, NEED_MORE
            mantissa = 0
            digits = 0  # significant digits kept in mantissa
            exponent = 0
            seen = False
            # the integer and the fraction digits are two loops written out: one shared helper
            # made the parser 40% slower
            c = np.int64(buf[pos]) - 48 if pos < n else -1
            while 0 <= c <= 9:
                seen = True
                if digits < 18:
                    if mantissa > 0 or c > 0:
                        mantissa = mantissa * 10 + c
                        digits += 1
                else:
                    exponent += 1
                    digits += 1
                pos += 1
                c = np.int64(buf[pos]) - 48 if pos < n else -1
            if c == -2:  # '.'
                pos += 1
                c = np.int64(buf[pos]) - 48 if pos < n else -1
                while 0 <= c <= 9:
                    seen = True
                    if digits < 18:
                        if mantissa > 0 or c > 0:
                            mantissa = mantissa * 10 + c
                            digits += 1
                        exponent -= 1
                    elif c > 0:
                        digits += 1
                    pos += 1
                    c = np.int64(buf[pos]) - 48 if pos < n else -1
            if not seen:
                value, pos, ok = _word_value(buf, pos, n)
                if not ok:
                    return pos, MALFORMED
                out[row, col] = sign * value
                if pos >= n:
                    return pos, NEED_MORE
                continue
            if pos < n and (buf[pos] == 101 or buf[pos] == 69):  # 'e' / 'E'
                pos += 1
                exp_sign = 1
                if pos < n and (buf[pos] == 45 or buf[pos] == 43):
                    exp_sign = -1 if buf[pos] == 45 else 1
                    pos += 1
                if pos >= n:
                    return pos, NEED_MORE
                if not 48 <= buf[pos] <= 57:
                    return pos, MALFORMED
                e = 0
                while pos < n and 48 <= buf[pos] <= 57:
                    e = min(e * 10 + buf[pos] - 48, 100000)
                    pos += 1
                exponent += exp_sign * e
            if pos >= n:
                return pos, NEED_MORE  # the number may have been cut
            if buf[pos] != _SPACE and buf[pos] != _TAB and buf[pos] != _NEWLINE and buf[pos] != _CR:
                return pos, MALFORMED
            if digits > 15 or exponent > 22 or exponent < -22:
                status = INEXACT
                value = 0.0
            elif exponent >= 0:
                value = mantissa * _POW10[exponent]
            else:
                value = mantissa / _POW10[-exponent]
            out[row, col] = sign * value
        while pos < n and (buf[pos] == _SPACE or buf[pos] == _TAB or buf[pos] == _CR):
            pos += 1
        if pos >= n:
            return pos, NEED_MORE
        if buf[pos] != _NEWLINE:
            return pos, MALFORMED
        pos += 1
    return pos, status


@njit(cache=True)
def skip_rows(buf, start, rows):
    """Position just after ``rows`` more newlines from ``start``, or -1 if the buffer ends first."""
    pos = start
    n = len(buf)
    for _ in range(rows):
        while pos < n and buf[pos] != _NEWLINE:
            pos += 1
        if pos >= n:
            return -1
        pos += 1
    return pos
