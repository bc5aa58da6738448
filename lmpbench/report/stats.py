"""Statistics of the report: the mean over seeds with its interval, and rank correlations.

Mean over seeds: Student-t interval, mean +- t(0.975, n-1) s / sqrt(n), s the sample standard
deviation (ddof 1); none with fewer than two seeds. Seeds are few (2 to 5), so a bootstrap
interval would be too narrow; the t interval assumes roughly normal seed-to-seed scatter.

Kendall tau: tau-b (scipy.stats.kendalltau) between the models' force MAE and a simulation
metric, each model's value the mean over its seeds; only models with both values count. Its
95% interval: Fieller, Hartley and Pearson (1957), tanh(atanh(tau) +- 1.96 sqrt(0.437 / (n - 4))),
defined for n >= 5 models; with fewer the interval is reported as not computable. The p value
is scipy's (exact for small n without ties).
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
MIN_MODELS_FOR_TAU_INTERVAL = 5
TAU_VARIANCE_FACTOR = 0.437  # Fieller, Hartley & Pearson (1957), Biometrika 44, 470
INTERVAL_METHOD = "Student-t 95% interval over seeds: mean +- t(0.975, n-1) s/sqrt(n), s with ddof 1"
TAU_METHOD = ("Kendall tau-b of the models' seed means (scipy.stats.kendalltau); 95% interval "
              "tanh(atanh(tau) +- 1.96 sqrt(0.437/(n-4))) (Fieller, Hartley & Pearson 1957), for n >= 5 models")


def mean_interval(values) -> dict:
    """Mean, sample standard deviation and the t interval of the finite ``values`` (None skipped)."""
    from scipy import stats

    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "low": None, "high": None}
    if n == 1:
        return {"n": 1, "mean": float(x[0]), "std": None, "low": None, "high": None}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)
    mean = float(x.mean())
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def kendall(x, y) -> dict:
    """Kendall tau-b of the pairs where both ``x`` and ``y`` are known, with its interval."""
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    result = {"n": n, "tau": None, "p": None, "low": None, "high": None}
    if n < 3:
        result["reason"] = f"{n} model(s) with both values; a rank correlation needs at least 3"
        return result
    a, b = np.array(pairs).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        result["reason"] = "one of the two is the same for every model: no ranking"
        return result
    tau, p = stats.kendalltau(a, b)
    result.update(tau=float(tau), p=float(p))
    if n < MIN_MODELS_FOR_TAU_INTERVAL:
        result["reason"] = f"interval needs at least {MIN_MODELS_FOR_TAU_INTERVAL} models, has {n}"
        return result
    z = math.atanh(max(-0.9999, min(0.9999, tau)))  # |tau| = 1 would give an infinite z
    half = float(stats.norm.ppf(0.5 + LEVEL / 2)) * math.sqrt(TAU_VARIANCE_FACTOR / (n - 4))
    result.update(low=math.tanh(z - half), high=math.tanh(z + half))
    return result
