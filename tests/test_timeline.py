"""Interval arithmetic and the fast histogram moments, sans-I/O."""

from __future__ import annotations

import random

import pytest

from socktools.flood import stats as st
from socktools.flood.timeline import subtract


def test_median_of_index_is_hdrhs_for_every_bucket():
    hist = st.new_histogram()
    for i in range(st.COUNTS_LEN):
        assert st.median_of_index(i) == hist._hdr_median_equiv_value(hist.get_value_from_index(i)), i


def test_moments_equal_hdrhs_mean_and_stddev():
    rng = random.Random(7)
    hist = st.new_histogram()
    for _ in range(20_000):
        hist.record_value(int(rng.lognormvariate(12, 1.2)) + 1)
    hist.record_value(3_000_000_000)
    mean, stdev = st.moments(hist)
    assert mean == pytest.approx(hist.get_mean_value(), rel=1e-12)
    assert stdev == pytest.approx(hist.get_stddev(), rel=1e-9)


def test_subtract_undoes_add():
    a, b = st.new_histogram(), st.new_histogram()
    for v in (1, 500, 1500, 2_000_000):
        a.record_value(v)
    for v in (7, 900_000, 3_000_000_000):
        b.record_value(v)
    total = st.add_into(st.add_into(None, a), b)
    rest = subtract(total, a)
    assert list(rest.counts) == list(b.counts)
    assert rest.get_total_count() == 3 and rest.get_max_value() == b.get_max_value()
    assert subtract(total, total) is None
