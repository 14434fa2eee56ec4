"""The study's statistics against hand computations and textbook formulas."""

import numpy as np
import pytest
from scipy import stats as sps

from deconas.search import stats


def _tau_by_hand(x, y):
    """Kendall tau-b from its definition (concordant minus discordant pairs, tie-corrected)."""
    n, c, d, tx, ty = len(x), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if a == 0 and b == 0:
                continue
            if a == 0:
                tx += 1
            elif b == 0:
                ty += 1
            elif a == b:
                c += 1
            else:
                d += 1
    return (c - d) / np.sqrt((c + d + tx) * (c + d + ty))


def test_kendall_tau_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.normal(size=9), rng.normal(size=9)
        y[:3] = y[0]  # ties
        assert stats.kendall_tau(x, y) == pytest.approx(_tau_by_hand(x, y), abs=1e-12)


def test_the_bootstrap_taus_and_fits_of_many_resamples_at_once_match_one_at_a_time():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=11), rng.normal(size=11)
    x[:2] = x[2]  # ties before any resampling
    idx = rng.integers(0, 11, (200, 11))  # resamples repeat points: ties in almost every row
    idx[0] = 4  # one constant row
    got = stats._tau_rows(x[idx], y[idx])
    want = [_tau_by_hand(x[i], y[i]) if np.ptp(x[i]) and np.ptp(y[i]) else np.nan for i in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(got[0])
    p = np.exp(rng.uniform(9, 12, size=11))
    a, b = stats._fit_rows(np.log(p[idx[1:]]), y[idx[1:]])
    for k, i in enumerate(idx[1:60]):
        bb, aa = np.polyfit(np.log(p[i]), y[i], 1)
        assert (a[k, 0], b[k, 0]) == (pytest.approx(aa, abs=1e-9), pytest.approx(bb, abs=1e-9))


def test_kendall_tau_is_nan_without_two_distinct_values():
    assert np.isnan(stats.kendall_tau([1.0], [2.0]))
    assert np.isnan(stats.kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_log_fit_recovers_a_line_in_log_parameters():
    p = np.array([1e4, 2e4, 5e4, 1e5, 3e5])
    a, b = stats.log_fit(p, 25.0 + 0.4 * np.log(p))
    assert (a, b) == (pytest.approx(25.0), pytest.approx(0.4))
    assert np.allclose(stats.log_residuals(p, 25.0 + 0.4 * np.log(p) + [0, 0.1, -0.1, 0, 0]),
                       stats.log_residuals(p, [0, 0.1, -0.1, 0, 0]), atol=1e-12)


def test_a_monotone_ranking_has_tau_one_and_an_interval_at_one():
    rng = np.random.default_rng(1)
    x = np.arange(12.0)
    r = stats.tau_with_interval(x, 2 * x + 3, rng, 300)
    assert r["tau"] == pytest.approx(1.0) and r["ci95"] == [pytest.approx(1.0)] * 2 and r["n"] == 12


def test_the_tau_interval_covers_the_truth_about_as_often_as_it_claims():
    # Bivariate normal with correlation rho: the population tau is (2 / pi) asin(rho).
    rho, n, trials = 0.6, 40, 60
    truth = 2 / np.pi * np.arcsin(rho)
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(trials):
        z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
        lo, hi = stats.tau_with_interval(z[:, 0], z[:, 1], rng, 400)["ci95"]
        hits += lo <= truth <= hi
    # 95% nominal; 60 trials: below 48 hits would be a 4-sigma shortfall.
    assert hits >= 48


def test_residual_tau_removes_what_size_alone_explains():
    # Both scores are driven by size plus independent noise: the raw tau is high, the residual
    # one near zero; with a shared quality term besides size, the residual tau stays high.
    rng = np.random.default_rng(3)
    n = 60
    p = np.exp(rng.uniform(np.log(2e4), np.log(2e5), n))
    size = np.log(p)
    f = stats.fidelity(p, size + rng.normal(0, 0.05, n), size + rng.normal(0, 0.05, n), rng, 200)
    assert f["tau"] > 0.7 and abs(f["residual_tau"]) < 0.25
    assert f["residual_ci95"][0] < 0 < f["residual_ci95"][1]
    q = rng.normal(0, 1, n)
    g = stats.fidelity(p, size + q, size + q + rng.normal(0, 0.1, n), rng, 200)
    assert g["residual_tau"] > 0.7 and g["residual_ci95"][0] > 0.5


def test_gain_over_the_pool_is_the_mean_residual_and_its_error_matches_the_formula():
    rng = np.random.default_rng(4)
    n_pool, k, sigma = 200, 50, 0.1
    pp = np.exp(rng.uniform(np.log(2e4), np.log(2e5), n_pool))
    py = 30 + 0.3 * np.log(pp) + rng.normal(0, sigma, n_pool)
    xp = np.exp(rng.uniform(np.log(2e4), np.log(2e5), k))
    xy = 30 + 0.3 * np.log(xp) + 0.25 + rng.normal(0, sigma, k)
    g = stats.gain_over_pool(pp, py, xp, xy, rng, 1000)
    a, b = np.polyfit(np.log(pp), py, 1)[::-1]
    assert g["mean_db"] == pytest.approx(float(np.mean(xy - a - b * np.log(xp))), abs=1e-12)
    # Standard error: the picks' spread over sqrt(k), plus the fit's error at their mean size.
    x, xm = np.log(pp), np.log(xp).mean()
    fit_var = sigma ** 2 * (1 / n_pool + (xm - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    want = np.sqrt(sigma ** 2 / k + fit_var)
    assert g["se_db"] == pytest.approx(want, rel=0.15)
    assert g["ci95"][0] < 0.25 < g["ci95"][1] and g["z"] > 10


def test_matched_pair_interval_is_students():
    d = [0.1, -0.05, 0.2, 0.15, 0.0]
    r = stats.mean_with_interval(d)
    lo, hi = sps.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=sps.sem(d))
    assert r["ci95"] == [pytest.approx(lo), pytest.approx(hi)] and r["n"] == 5
    assert stats.mean_with_interval([0.3])["ci95"] is None and stats.mean_with_interval([])["n"] == 0


def test_nearest_in_size_respects_the_tolerance():
    pool = [10_000, 20_000, 40_000]
    assert stats.nearest_in_size(pool, 21_000, 0.1) == 1
    assert stats.nearest_in_size(pool, 30_000, 0.1) is None  # 20k and 40k are 33% away
    assert stats.nearest_in_size(pool, 30_000, 0.5) == 2  # nearer in log: 40/30 < 30/20


def test_seed_noise_is_the_pooled_within_std_against_the_std_of_means():
    groups = {"a": [31.0, 31.2], "b": [31.5, 31.3, 31.4], "c": [30.9]}
    r = stats.seed_noise(groups)
    ss = (0.1 ** 2 * 2) + (0.1 ** 2 + 0.1 ** 2)  # squared deviations from each mean
    assert r["seed_std_db"] == pytest.approx(np.sqrt(ss / 3))
    assert r["between_std_db"] == pytest.approx(np.std([31.1, 31.4, 30.9], ddof=1))
    assert r["ratio"] == pytest.approx(r["seed_std_db"] / r["between_std_db"])
    assert (r["architectures"], r["with_seeds"]) == (3, 2)


def test_arch_by_seed_splits_an_additive_table_into_its_effects():
    # architecture effects -0.1, 0, +0.1; seed effects -0.02, +0.02; interaction +-0.005 in a
    # checkerboard (it sums to zero along every row and column)
    arch, seed = np.array([-0.1, 0.0, 0.1]), np.array([-0.02, 0.02])
    inter = 0.005 * np.array([[1, -1], [-1, 1], [0, 0]])
    y = 31 + arch[:, None] + seed[None, :] + inter
    r = stats.arch_by_seed(y)
    assert r["seed_effect_std_db"] == pytest.approx(np.std([-0.02, 0.02], ddof=1))
    ms_e = (inter ** 2).sum() / 2  # (3 - 1) x (2 - 1) degrees of freedom
    assert r["residual_std_db"] == pytest.approx(np.sqrt(ms_e))
    within = np.sqrt(((y - y.mean(1, keepdims=True)) ** 2).sum() / 3)
    assert r["seed_std_db"] == pytest.approx(within)
    ms_a = 2 * (arch ** 2).sum() / 2
    assert r["arch_std_db"] == pytest.approx(np.sqrt((ms_a - ms_e) / 2))
    assert r["arch_f"] == pytest.approx(ms_a / ms_e)
    assert r["arch_std_upper95_db"] > r["arch_std_db"]


def test_arch_by_seed_finds_no_architecture_effect_in_pure_noise():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):  # with no architecture effect the F test rejects about 5% of the time
        r = stats.arch_by_seed(31 + rng.normal(0, 0.01, (6, 3)))
        hits += r["arch_p"] < 0.05
    assert 0.02 < hits / 400 < 0.09


def test_arch_by_seed_upper_limit_covers_the_true_spread_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    n, covered = 600, 0
    for _ in range(n):  # true architecture std 0.01 dB, residual noise 0.01 dB
        y = 31 + rng.normal(0, 0.01, (6, 1)) + rng.normal(0, 0.01, (6, 3))
        covered += stats.arch_by_seed(y)["arch_std_upper95_db"] >= 0.01
    assert 0.91 < covered / n < 0.99
