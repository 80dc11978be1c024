"""Statistics used by the tables: Spearman's rank correlation with its p-value (paper Section 4),
BCa bootstrap confidence intervals for it (Appendix C), and mean/std over seeds."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# Fewer points than this give no meaningful rank correlation (scipy also refuses < 2).
MIN_CORRELATION_POINTS = 3


@dataclass(frozen=True)
class BootstrapSettings:
    """Appendix C: 95% intervals, BCa bootstrap, 2000 resamples (paired x/y)."""

    n_resamples: int = 2000
    confidence_level: float = 0.95
    seed: int = 0


def _is_degenerate(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) < MIN_CORRELATION_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy); NaN, NaN when fewer than 3 points or
    one variable is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if _is_degenerate(x, y):
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def spearman_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorised for scipy.stats.bootstrap): Pearson correlation
    of average ranks, which is what scipy.stats.spearmanr computes."""
    rank_x = stats.rankdata(x, axis=axis)
    rank_y = stats.rankdata(y, axis=axis)
    rank_x = rank_x - rank_x.mean(axis=axis, keepdims=True)
    rank_y = rank_y - rank_y.mean(axis=axis, keepdims=True)
    numerator = (rank_x * rank_y).sum(axis=axis)
    denominator = np.sqrt((rank_x**2).sum(axis=axis) * (rank_y**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def spearman_bca_interval(
    x: np.ndarray, y: np.ndarray, settings: BootstrapSettings = BootstrapSettings()
) -> tuple[float, float]:
    """BCa bootstrap confidence interval of Spearman's rho, resampling (x, y) pairs together
    (scipy.stats.bootstrap, paired=True, method='BCa'); NaN, NaN for degenerate data."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if _is_degenerate(x, y):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # Resamples with a constant variable give NaN statistics; scipy warns and the interval
        # comes back NaN, which the tables report as missing.
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (x, y),
            spearman_statistic,
            paired=True,
            vectorized=True,
            method="BCa",
            n_resamples=settings.n_resamples,
            confidence_level=settings.confidence_level,
            rng=np.random.default_rng(settings.seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def seed_statistics(frame: pd.DataFrame, keys: list[str], value: str, ddof: int) -> pd.DataFrame:
    """Mean and std over seeds of ``value`` for each ``keys`` group.

    Several rows of one seed (e.g. the same baseline run listed under two corpora) are first
    averaged, so each seed counts once. ``std`` is NaN with a single seed (a std of one run is
    not a measure of spread), ``n_seeds`` says how many seeds each cell has.
    """
    columns = [*keys, "mean", "std", "n_seeds"]
    frame = frame.dropna(subset=[value])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    per_seed = frame.groupby([*keys, "seed"], dropna=False, sort=False)[value].mean().reset_index()
    grouped = per_seed.groupby(keys, dropna=False, sort=False)[value]
    out = grouped.agg(mean="mean", n_seeds="count").reset_index()
    out["std"] = grouped.std(ddof=ddof).to_numpy()
    out.loc[out["n_seeds"] < 2, "std"] = np.nan
    return out[columns]
