"""Kaplan–Meier, Greenwood log-log band, median, RMST and block averages against hand values."""

import numpy as np
import pytest

from md_harness.statistics import (
    block_average,
    block_means,
    kaplan_meier,
    loglog_band,
    median_survival,
    restricted_mean,
    z_value,
)

# times 1, 2, 2+, 3, 4+, 5 (+ = censored)
TIMES = [1, 2, 2, 3, 4, 5]
OBSERVED = [1, 1, 0, 1, 0, 1]


def test_kaplan_meier_hand_example():
    km = kaplan_meier(TIMES, OBSERVED)
    # t=1: 6 at risk, 1 event → 5/6; t=2: 5 at risk (the censored 2 counts), 1 event → 2/3;
    # t=3: 3 at risk → 4/9; t=5: 1 at risk, 1 event → 0
    assert km.times.tolist() == [1, 2, 3, 5]
    assert km.at_risk.tolist() == [6, 5, 3, 1] and km.events.tolist() == [1, 1, 1, 1]
    assert km.survival == pytest.approx([5 / 6, 2 / 3, 4 / 9, 0.0])
    # Greenwood sum at t=3: 1/(6·5) + 1/(5·4) + 1/(3·2) = 0.25
    assert km.greenwood[2] == pytest.approx(0.25)
    assert np.isinf(km.greenwood[3])
    # log-log band at t=3: σ = √0.25 / |ln(4/9)|, bounds (4/9)^exp(±1.96 σ)
    sigma = 0.5 / abs(np.log(4 / 9))
    z = 1.959963984540054
    assert km.lower[2] == pytest.approx((4 / 9) ** np.exp(z * sigma))
    assert km.upper[2] == pytest.approx((4 / 9) ** np.exp(-z * sigma))
    assert (km.lower[3], km.upper[3]) == (0.0, 0.0)


def test_step_function_lookup():
    km = kaplan_meier(TIMES, OBSERVED)
    s, lo, hi = km.at([0.5, 1.0, 2.5, 4.9, 10.0])
    assert s == pytest.approx([1.0, 5 / 6, 2 / 3, 4 / 9, 0.0])
    assert lo[0] == hi[0] == 1.0


def test_matches_published_6mp_leukemia_table():
    # Freireich 6-MP arm; R survfit(conf.type = "log-log") gives these rows (time: S, se, lower, upper)
    times = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
    observed = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    expected = {
        6: (0.857, 0.0764, 0.620, 0.952),
        7: (0.807, 0.0869, 0.563, 0.923),
        10: (0.753, 0.0963, 0.503, 0.889),
        13: (0.690, 0.1068, 0.432, 0.849),
        16: (0.627, 0.1141, 0.368, 0.805),
        22: (0.538, 0.1282, 0.268, 0.747),
        23: (0.448, 0.1346, 0.188, 0.680),
    }
    km = kaplan_meier(times, observed)
    for k, t in enumerate(km.times):
        s, se, lo, hi = expected[int(t)]
        got = (km.survival[k], km.survival[k] * np.sqrt(km.greenwood[k]), km.lower[k], km.upper[k])
        assert got == pytest.approx((s, se, lo, hi), abs=6e-4)
    assert median_survival(km) == (23.0, 13.0, pytest.approx(np.nan, nan_ok=True))


def test_restricted_mean_hand_example():
    km = kaplan_meier(TIMES, OBSERVED)
    # ∫₀⁴ S = 1·1 + 1·5/6 + 1·2/3 + 1·4/9
    rmst, se = restricted_mean(km, 4.0)
    assert rmst == pytest.approx(1 + 5 / 6 + 2 / 3 + 4 / 9)
    # A_j = area from t_j to 4: t=1: 5/6+2/3+4/9, t=2: 2/3+4/9, t=3: 4/9
    a = [5 / 6 + 2 / 3 + 4 / 9, 2 / 3 + 4 / 9, 4 / 9]
    var = a[0] ** 2 / (6 * 5) + a[1] ** 2 / (5 * 4) + a[2] ** 2 / (3 * 2)
    assert se == pytest.approx(np.sqrt(var))


def test_no_failures_survival_one_and_rmst_full():
    km = kaplan_meier([6.0] * 5, [0] * 5)
    assert len(km.times) == 0
    assert km.at(6.0)[0] == 1.0
    assert restricted_mean(km, 6.0) == (6.0, 0.0)
    median, lower, upper = median_survival(km, 6.0)
    # 5 of 5 survivors: S ≥ 0.025^(1/5) = 0.478, so a median from t = 0 on cannot be excluded
    assert np.isnan(median) and np.isnan(upper) and lower == 0.0
    assert all(np.isnan(median_survival(kaplan_meier([6.0] * 6, [0] * 6), 6.0)))  # 0.025^(1/6) = 0.54


def test_median_is_first_time_at_or_below_half():
    km = kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1])
    assert median_survival(km)[0] == 2.0  # S(2) = 0.5


def test_band_edges():
    lo, hi = loglog_band(np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.1, np.inf]), z_value(0.95))
    assert (lo[0], hi[0], lo[2], hi[2]) == (1.0, 1.0, 0.0, 0.0)
    assert lo[1] < 0.5 < hi[1]
    assert z_value(0.95) == pytest.approx(1.959963984540054)


def test_block_average():
    values = np.array([9.0, 1, 1, 2, 2, 3, 3])  # the leading sample that does not fit is dropped
    blocks = block_means(values, 3)
    assert blocks.tolist() == [1.0, 2.0, 3.0]
    mean, err = block_average(blocks)
    assert mean == 2.0 and err == pytest.approx(1.0 / np.sqrt(3))
    assert len(block_means(values[:2], 3)) == 0
    assert all(np.isnan(block_average(np.zeros(0))))


# -- intervals that never collapse, and comparisons of models -------------------------------

from md_harness.statistics import (  # noqa: E402
    band_steps,
    clopper_pearson,
    compact_letters,
    holm,
    logrank,
    rmst_interval,
)

EXACT_4 = 0.025 ** (1 / 4)  # (α/2)^(1/n): the exact 95 % bound of 4 of 4 (or 0 of 4)


def test_four_of_four_survivors_have_the_exact_lower_bound_not_one():
    km = kaplan_meier([2.0] * 4, [0] * 4)
    s, lo, hi = km.interval(2.0)
    assert (s, hi) == (1.0, 1.0) and lo == pytest.approx(0.3976353644, abs=1e-9) == EXACT_4
    rmst, rmst_lo, rmst_hi, method = rmst_interval(km, 2.0)
    assert (rmst, rmst_hi) == (2.0, 2.0) and rmst_lo == pytest.approx(2.0 * EXACT_4)
    assert method == "integrated exact survival band"


def test_zero_of_four_survivors_have_the_exact_upper_bound_not_zero():
    km = kaplan_meier([0.5, 1.0, 1.5, 1.8], [1, 1, 1, 1])
    s, lo, hi = km.interval(2.0)
    assert (s, lo) == (0.0, 0.0) and hi == pytest.approx(1 - EXACT_4, abs=1e-12)
    rmst, rmst_lo, rmst_hi, method = rmst_interval(km, 2.0)
    assert rmst == pytest.approx(1.2) and 0 < rmst_lo < rmst < rmst_hi < 2.0 and method.startswith("normal")


def test_replicas_censored_early_shrink_the_effective_sample():
    km = kaplan_meier([1.0, 2.0, 2.0, 2.0], [0, 0, 0, 0])  # one replica stopped at 1 ps
    assert km.effective_size(2.0) == 3 and km.effective_size(0.5) == 4
    assert km.interval(2.0)[1] == pytest.approx(0.025 ** (1 / 3))
    t, s, lo, hi = band_steps(km, 2.0)
    assert lo[0] == pytest.approx(EXACT_4) and lo[-1] == pytest.approx(0.025 ** (1 / 3))


def test_clopper_pearson_matches_the_beta_quantiles():
    assert clopper_pearson(7, 10) == pytest.approx((0.3475, 0.9333), abs=1e-4)  # the textbook 7 of 10
    assert clopper_pearson(0, 4)[1] == pytest.approx(1 - EXACT_4)


def test_logrank_by_hand_and_against_scipy():
    # one event per group at distinct times, no censoring: O−E and V by hand
    chi2, p = logrank([1.0], [1], [2.0], [1])
    assert chi2 == pytest.approx((1 - 0.5) ** 2 / 0.25) and p == pytest.approx(0.3173105079, abs=1e-9)
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "logrank"):
        pytest.skip("scipy < 1.14 has no logrank")
    rng = np.random.default_rng(1)
    ta = np.minimum(rng.exponential(3, 20).round(1), 4.0)
    tb = np.minimum(rng.exponential(6, 25).round(1), 4.0)
    oa, ob = ta < 4.0, tb < 4.0
    ref = stats.logrank(stats.CensoredData(uncensored=ta[oa], right=ta[~oa]),
                        stats.CensoredData(uncensored=tb[ob], right=tb[~ob]))
    chi2, p = logrank(ta, oa, tb, ob)
    assert chi2 == pytest.approx(ref.statistic**2, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-10)


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])


def test_compact_letters_share_a_letter_exactly_when_not_different():
    different = {frozenset("ac"), frozenset("ad"), frozenset("bd")}
    letters = compact_letters(list("abcd"), lambda x, y: frozenset((x, y)) in different)
    for x in "abcd":
        for y in "abcd":
            if x < y:
                shares = bool(set(letters[x]) & set(letters[y]))
                assert shares == (frozenset((x, y)) not in different), (x, y, letters)
    assert letters["a"].startswith("a")


def test_blocking_finds_the_error_of_a_correlated_mean():
    """AR(1) with φ = 0.98: τ_int = (1 + φ) / (2(1 − φ)) = 49.5 samples, se of the mean of
    20,000 samples √(2 τ σ² / n) = 0.354; the naive se is 7× smaller."""
    from md_harness.statistics import blocking

    phi, estimates, means = 0.98, [], []
    for seed in range(12):
        noise = np.random.default_rng(seed).normal(size=20_000)
        x = np.zeros_like(noise)
        for k in range(1, len(x)):
            x[k] = phi * x[k - 1] + noise[k]
        b = blocking(x)
        assert b.converged and b.se > 4 * np.std(x) / np.sqrt(len(x))
        estimates.append(b.se)
        means.append(x.mean())
    assert np.mean(estimates) == pytest.approx(0.354, rel=0.15)
    short = blocking(np.cumsum(np.random.default_rng(0).normal(size=300)))  # a random walk: no plateau
    assert not short.converged


def test_white_noise_blocking_is_the_naive_error():
    from md_harness.statistics import blocking

    x = np.random.default_rng(1).normal(size=4096)
    b = blocking(x)
    assert b.converged and b.se == pytest.approx(x.std(ddof=1) / 64, rel=0.1) and b.tau < 1.0


def test_the_model_density_uses_the_replica_as_its_unit():
    from md_harness.report import model_density
    from md_harness.statistics import blocking

    analyses = [blocking(np.random.default_rng(k).normal(size=1000) * 0.001 + m) for k, m in enumerate((0.90, 0.93))]
    density, se, method = model_density([0.90, 0.93], analyses)
    assert density == pytest.approx(0.915) and se == pytest.approx(0.015) and "spread of 2 replica means" in method
    density, se, method = model_density([0.90], analyses[:1])
    assert se == pytest.approx(analyses[0].se) and "within one replica" in method
