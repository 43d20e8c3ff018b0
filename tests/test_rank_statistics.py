"""Rank correlations over models: the bootstrap interval, the permutation null, the partial
correlation at fixed force error; checked by hand and against the residual definition."""

import numpy as np
import pytest

from studies.rank_statistics import MIN_MODELS, partial_rho, rank_correlation, spearman_rho


def test_a_perfect_ranking_over_eight_models():
    x = np.arange(8.0)
    c = rank_correlation("x", "y", x, 2 * x + 1)
    assert c.rho == pytest.approx(1.0) and c.rho_upper == pytest.approx(1.0)
    # two of 8! orderings reach |ρ| = 1: p ≈ 2/40320, bounded below by 1/(permutations + 1)
    assert c.p_permutation < 0.002
    assert -0.8 < c.null_lower < 0 < c.null_upper < 0.8


def test_fewer_models_than_the_minimum_say_so():
    c = rank_correlation("S", "ttf_rmst_ps", [1, 2, 3], [3, 2, 1])
    assert np.isnan(c.rho) and c.n == 3 and f"at least {MIN_MODELS} models" in c.text()
    assert "not computed" in rank_correlation("S", "y", [1, 1, 1, 1], [1, 2, 3, 4]).message


def test_partial_correlation_equals_the_correlation_of_rank_residuals():
    rng = np.random.default_rng(3)
    z = rng.normal(size=12)
    x, y = z + 0.3 * rng.normal(size=12), z + 0.3 * rng.normal(size=12)
    from scipy.stats import rankdata

    rx, ry, rz = (rankdata(v) for v in (x, y, z))
    residual = lambda a: a - np.polyval(np.polyfit(rz, a, 1), rz)  # noqa: E731
    expected = np.corrcoef(residual(rx), residual(ry))[0, 1]
    assert partial_rho(x, y, z) == pytest.approx(expected, abs=1e-12)
    assert spearman_rho(x, y) > 0.5  # both follow z …
    c = rank_correlation("x", "y", x, y, z, "z")
    assert abs(c.partial_rho) < abs(c.rho) and c.partial_p_permutation > c.p_permutation  # … not each other


def test_missing_values_drop_the_model():
    c = rank_correlation("x", "y", [1, 2, np.nan, 4, 5], [1, 2, 3, 4, 5])
    assert c.n == 4 and c.rho == pytest.approx(1.0)
