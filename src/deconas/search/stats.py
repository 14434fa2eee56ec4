"""The study's statistics: rank agreement with bootstrap intervals, the size trend, and the
searched-against-random differences at matched parameters. Plain numpy and scipy, no torch.

Every interval is a percentile bootstrap over architectures (the unit the question is about):
resample the architectures with replacement, recompute the figure, take the 2.5% and 97.5%
points. ``rng`` makes them reproducible.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from scipy.stats import f as fisher_f, t as student_t


def _tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of (B, n) arrays at once (bootstrap resamples repeat
    points, so ties are the rule); nan where a row is constant."""
    i, j = np.triu_indices(x.shape[1], 1)
    dx, dy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    pairs = len(i)
    den = (pairs - (dx == 0).sum(1)) * (pairs - (dy == 0).sum(1)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (dx * dy).sum(1) / np.sqrt(den), np.nan)


def _fit_rows(x: np.ndarray, y: np.ndarray) -> tuple:
    """Least-squares (a, b) of y = a + b x for each row of (B, n) arrays."""
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = ((x - xm) * (y - ym)).sum(1, keepdims=True) / ((x - xm) ** 2).sum(1, keepdims=True)
    return ym - b * xm, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties count as neither concordant nor discordant); nan below 2 points
    or when one side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(_tau_rows(x[None], y[None])[0]) if len(x) >= 2 else float("nan")


def log_fit(params: Sequence[float], y: Sequence[float]) -> tuple:
    """(a, b) of the least-squares line y = a + b ln(params): the size trend."""
    a, b = _fit_rows(np.log(np.asarray(params, float))[None], np.asarray(y, float)[None])
    return float(a[0, 0]), float(b[0, 0])


def log_residuals(params: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """y minus its own size trend (:func:`log_fit`)."""
    a, b = log_fit(params, y)
    return np.asarray(y, float) - (a + b * np.log(np.asarray(params, float)))


def _interval(values: np.ndarray) -> list:
    v = values[np.isfinite(values)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [float("nan")] * 2


def _draws(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    # One call per resample, in order: the same stream as drawing them one at a time.
    return np.array([rng.integers(0, n, n) for _ in range(resamples)]).reshape(resamples, n)


def tau_with_interval(x: Sequence[float], y: Sequence[float], rng: np.random.Generator,
                      resamples: int = 2000) -> Dict[str, object]:
    """Kendall tau of (x, y) and its bootstrap 95% interval over the points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = _draws(rng, len(x), resamples)
    return {"tau": kendall_tau(x, y), "ci95": _interval(_tau_rows(x[idx], y[idx])), "n": int(len(x))}


def fidelity(params: Sequence[float], shared: Sequence[float], standalone: Sequence[float],
             rng: np.random.Generator, resamples: int = 2000) -> Dict[str, object]:
    """How well shared-weight PSNR ranks standalone PSNR: tau with its interval, and the same
    on the residuals after each side's trend in log-parameters is removed (the ranking that is
    not just size). The residual fits are redone inside every resample."""
    p, s, a = (np.asarray(v, float) for v in (params, shared, standalone))
    out = tau_with_interval(s, a, rng, resamples)
    idx = _draws(rng, len(p), resamples)
    lp = np.log(p[idx])
    (a_s, b_s), (a_a, b_a) = _fit_rows(lp, s[idx]), _fit_rows(lp, a[idx])
    boot = _tau_rows(s[idx] - (a_s + b_s * lp), a[idx] - (a_a + b_a * lp))
    boot[np.ptp(p[idx], axis=1) == 0] = np.nan  # a line needs two sizes
    out["residual_tau"] = kendall_tau(log_residuals(p, s), log_residuals(p, a)) \
        if len(p) > 2 and len(set(p)) > 1 else float("nan")
    out["residual_ci95"] = _interval(boot)
    out["size_tau"] = kendall_tau(p, a)  # how much of the standalone order is size alone
    return out


def gain_over_pool(pool_params: Sequence[float], pool_psnr: Sequence[float], params: Sequence[float],
                   psnr: Sequence[float], rng: np.random.Generator, resamples: int = 2000) -> Dict[str, object]:
    """Mean of the picks' PSNR minus the pool's fit at their parameters (dB), with a bootstrap
    standard error and 95% interval that resample both the pool (refitting the line) and the
    picks, and ``z`` = mean / standard error."""
    pp, py, xp, xy = (np.asarray(v, float) for v in (pool_params, pool_psnr, params, psnr))
    a, b = log_fit(pp, py)
    mean = float(np.mean(xy - (a + b * np.log(xp))))
    ips, iks = [], []
    for _ in range(resamples):
        ip = rng.integers(0, len(pp), len(pp))
        if np.ptp(pp[ip]) == 0:
            continue  # a line needs two sizes
        ips.append(ip)
        iks.append(rng.integers(0, len(xp), len(xp)))
    if ips:
        ip, ik = np.array(ips), np.array(iks)
        a, b = _fit_rows(np.log(pp[ip]), py[ip])
        boot = np.mean(xy[ik] - (a + b * np.log(xp[ik])), axis=1)
    else:
        boot = np.zeros(0)
    se = float(np.std(boot, ddof=1)) if len(boot) > 1 else float("nan")
    return {"mean_db": mean, "se_db": se, "ci95": _interval(boot), "z": mean / se if se > 0 else float("nan"),
            "n": int(len(xp))}


def nearest_in_size(pool_params: Sequence[float], params: float, tolerance: float) -> Optional[int]:
    """Index of the pool architecture nearest in log-parameters, when within ``tolerance``
    (a share of ``params``); None otherwise."""
    pp = np.asarray(pool_params, float)
    i = int(np.argmin(np.abs(np.log(pp) - np.log(params))))
    return i if abs(pp[i] - params) <= tolerance * params else None


def mean_with_interval(values: Sequence[float]) -> Dict[str, object]:
    """Mean, standard error and Student-t 95% interval of paired differences."""
    v = np.asarray(values, float)
    n = len(v)
    if n == 0:
        return {"mean_db": None, "se_db": None, "ci95": None, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean_db": mean, "se_db": None, "ci95": None, "n": 1}
    se = float(v.std(ddof=1) / np.sqrt(n))
    h = float(student_t.ppf(0.975, n - 1)) * se
    return {"mean_db": mean, "se_db": se, "ci95": [mean - h, mean + h], "n": int(n)}


def bonferroni_t(n: int, comparisons: int, level: float = 0.05) -> Optional[float]:
    """The t a mean of ``n`` paired differences must reach (mean / standard error, n - 1
    degrees of freedom) to be two-sided significant at ``level`` over ``comparisons`` tests
    (Bonferroni); None below two differences."""
    if n < 2:
        return None
    return float(student_t.ppf(1 - level / (2 * max(1, comparisons)), n - 1))


def seed_noise(groups: Dict[str, Sequence[float]]) -> Dict[str, object]:
    """The seed-to-seed std of one architecture's PSNR (pooled over architectures with at
    least two seeds) against the std between the architectures' means: the ground truth's
    test (the first should be at most a third of the second)."""
    multi = [np.asarray(v, float) for v in groups.values() if len(v) >= 2]
    means = [float(np.mean(v)) for v in groups.values() if len(v)]
    dof = sum(len(v) - 1 for v in multi)
    within = float(np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in multi) / dof)) if dof else None
    between = float(np.std(means, ddof=1)) if len(means) > 1 else None
    return {"seed_std_db": within, "between_std_db": between,
            "ratio": within / between if within is not None and between else None,
            "architectures": len(means), "with_seeds": len(multi)}


def arch_by_seed(table: Sequence[Sequence[float]]) -> Dict[str, object]:
    """Two-way analysis of a complete (architecture x seed) table of standalone PSNRs, each
    seed the same for every architecture (the same initialisation stream and patch order).

    - ``seed_std_db``: one training's seed-to-seed std (pooled within architectures, as
      :func:`seed_noise`);
    - ``seed_effect_std_db``: the std of the seeds' means: the part of that noise a seed gives
      every architecture alike, which cancels when architectures are compared at one seed;
    - ``residual_std_db``: what is left (the architecture x seed interaction), the noise of a
      comparison at a shared seed;
    - ``arch_std_db``: the std of the true architecture means, estimated from the random-effects
      model (mean square of architectures minus residual, over the seeds; 0 when negative), with
      an upper 95% limit from the F distribution of the mean-square ratio (the residual's
      variance taken as known); ``arch_f`` and ``arch_p``: the F test of "no architecture effect".
    """
    y = np.asarray(table, float)
    a, n = y.shape
    if a < 2 or n < 2 or not np.isfinite(y).all():
        raise ValueError("a complete table of at least 2 architectures x 2 seeds is needed")
    grand = y.mean()
    arch, seed = y.mean(1), y.mean(0)
    resid = y - arch[:, None] - seed[None, :] + grand
    df_a, df_e = a - 1, (a - 1) * (n - 1)
    ms_a = n * ((arch - grand) ** 2).sum() / df_a
    ms_e = (resid ** 2).sum() / df_e
    within = float(np.sqrt(((y - arch[:, None]) ** 2).sum() / (a * (n - 1))))
    f = ms_a / ms_e if ms_e > 0 else float("inf")
    # ms_a / ms_e ~ (1 + n theta) F(df_a, df_e), theta = arch variance / residual variance
    theta_hi = max(0.0, (f / fisher_f.ppf(0.05, df_a, df_e) - 1) / n)
    return {"architectures": a, "seeds": n, "seed_std_db": within,
            "seed_effect_std_db": float(np.std(seed, ddof=1)), "residual_std_db": float(np.sqrt(ms_e)),
            "arch_means_std_db": float(np.std(arch, ddof=1)),
            "arch_std_db": float(np.sqrt(max(0.0, (ms_a - ms_e) / n))),
            "arch_std_upper95_db": float(np.sqrt(theta_hi * ms_e)),
            "arch_f": float(f), "arch_p": float(fisher_f.sf(f, df_a, df_e))}
