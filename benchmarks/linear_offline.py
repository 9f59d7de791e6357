"""Offline dev loop for the global linear demand model (issue 17, small firms): no Flower, no secure sum.

Builds the default scenario's firms for a seed in-process, sums their clipped demand statistics once, adds
the run's Gaussian noise (the same multiplier and sensitivity as `federation.linear_run`; draw d seeded like
the run's `--noise-seed d`, though the run's secure sum quantises first), solves AdaSSP, and scores the
global model on each firm's test windows beside its local-only MLP (small firms' fitted once per seed and
cached under --cache), small and large firms pooled. Designs are this script's own, so variants compare in
seconds: `base` is the design before session 8 (scaled by the series' training mean only), `level` the
current one (relative to each window's level, `clients.linear.window_level`); `+` adds extra columns
(see `variant_design`), `wl<w>` weights the large firms' rows by w.

    python -m benchmarks.linear_offline --seeds 3 --draws 0,1,2 --variants base,level [--verbose]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from silobridge.clients.linear import demand_sensitivity, forecast_units, ridge, sufficient_statistics
from silobridge.contract.sufficient import split_regression
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.firm_source import simulated_firm
from silobridge.federation.settings import settings_from_run_config
from silobridge.server.linear import adassp, add_noise, linear_noise_multipliers

ROOT = Path(__file__).resolve().parent.parent


def firms_of(seed: int):
    overrides = f"seed={seed};privacy.enabled=true;privacy.unit=record;privacy.epsilon=8;privacy.delta=1e-5"
    settings = settings_from_run_config({"scenario": str(ROOT / "scenarios" / "default.toml"), "set": overrides})
    spec = settings.spec
    firms = [simulated_firm(settings, spec, i, run_id=900 + seed) for i in range(len(settings.scenario.firms))]
    return settings, spec, firms


def local_only(seed: int, settings, firms, cache: Path) -> dict[str, np.ndarray]:
    """Each firm's local-only MLP test forecasts (cached per seed)."""
    path = cache / f"local_s{seed}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    from silobridge.clients.evaluation import forecast_units as mlp_units

    instruction = baseline_instruction(settings)
    out = {}
    for firm in firms:
        if firm.group != "small":
            continue
        model = firm.local_demand_model(instruction)
        out[firm.firm_id] = mlp_units(model, firm.demand_split[1], firm.device)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def variant_design(windows, spec, variant: str):
    """The base design with a variant's extra columns (before row clipping)."""
    from silobridge.clients.linear import clip_rows
    from silobridge.contract.config import TIERS

    bounds = spec.linear
    lags, horizon = spec.lags, spec.horizon
    raw = windows.features.astype(float)
    lag = np.clip(raw[:, :lags], 0.0, bounds.value_bound)
    period = np.clip(raw[:, lags : raw.shape[1] - len(TIERS)], -bounds.feature_bound, bounds.feature_bound)
    tier = raw[:, raw.shape[1] - len(TIERS) :]
    known = windows.seasonal_known.astype(bool)
    scale = np.maximum(windows.scale.astype(float), 1e-12)[:, None]
    seasonal = np.where(known, np.clip(windows.naive / scale, 0.0, bounds.value_bound), 0.0)
    ones = np.ones((len(windows), 1))
    level = window_level(windows, spec, variant)[:, None]
    if "level" in variant:
        lag = np.clip(raw[:, :lags] / level, 0.0, bounds.value_bound)
        seasonal = np.where(known, np.clip(windows.naive / scale / level, 0.0, bounds.value_bound), 0.0)
    mean = lag.mean(axis=1, keepdims=True)
    unknown = (~known).astype(float)
    cols = [lag, mean, seasonal, known, period, tier, ones]
    per = period.shape[1] // horizon
    fourier = period.reshape(len(windows), horizon, per)[:, :, :4]  # (n, h, 4)
    for part in variant.split("+"):
        if part == "base" or part.startswith("level"):
            continue
        if part == "lagunk":  # lags and their mean for rows without the seasonal values
            cols.append(np.concatenate([lag, mean], axis=1) * unknown[:, :1])
        elif part == "meanunk":
            cols.append(mean * unknown)  # per horizon
        elif part == "fourunk":  # the calendar terms again for rows without the seasonal values
            cols.append((fourier * unknown[:, :, None]).reshape(len(windows), -1))
        elif part == "meanfour":  # multiplicative season: level x calendar terms
            cols.append((fourier * mean[:, :, None]).reshape(len(windows), -1))
        elif part == "meanfourunk":
            cols.append((fourier * (mean * unknown)[:, :, None]).reshape(len(windows), -1))
        elif part == "recent":  # the last 4 weeks' mean
            cols.append(lag[:, -4:].mean(axis=1, keepdims=True))
        elif part.startswith("wl"):
            continue
        elif part == "tiermean":
            cols.append(tier * mean)
        elif part == "tierlag":
            cols.append((tier[:, :, None] * lag[:, None, :]).reshape(len(windows), -1))
        elif part == "tierunk":
            cols.append(tier * unknown[:, :1])
        else:
            raise ValueError(part)
    x = np.concatenate(cols, axis=1)
    y = clip_rows(np.clip(windows.targets.astype(float) / level, 0.0, bounds.value_bound), bounds.target_norm)
    return clip_rows(x, bounds.row_norm), y


def window_level(windows, spec, variant):
    """Per-window level the design is relative to (1: the series' training mean alone)."""
    raw = windows.features.astype(float)[:, : spec.lags]
    for part in variant.split("+"):
        if part.startswith("level"):
            floor = float(part[5:] or 0.1)
            return np.maximum(raw.mean(axis=1), floor)
    return np.ones(len(windows))


def wape(f, a):
    return float(np.abs(f - a).sum() / np.abs(a).sum())


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="3")
    parser.add_argument("--draws", default="0,1,2")
    parser.add_argument("--variants", default="base")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/s8join_offline"))
    args = parser.parse_args()
    for seed in [int(s) for s in args.seeds.split(",")]:
        settings, spec, firms = firms_of(seed)
        local = local_only(seed, settings, firms, args.cache)
        sens = demand_sensitivity(spec.linear.row_norm, spec.linear.target_norm)
        std = linear_noise_multipliers(spec)["demand"] * sens
        for variant in args.variants.split(","):
            designs = {f.firm_id: variant_design(f.demand_split[0], spec, variant) for f in firms}
            for part in variant.split("+"):
                if part.startswith("wl"):
                    root = np.sqrt(float(part[2:]))
                    for f in firms:
                        if f.group == "large":
                            designs[f.firm_id] = (designs[f.firm_id][0] * root, designs[f.firm_id][1] * root)
            tests = {f.firm_id: variant_design(f.demand_split[1], spec, variant)[0] for f in firms}
            dim = next(iter(designs.values()))[0].shape[1]
            summed = sum(sufficient_statistics(*designs[f.firm_id]) for f in firms)
            xtx, xty = split_regression(summed, dim, spec.horizon)
            models = {"nodp": ridge(xtx, xty, spec.linear.ridge)}
            for d in [int(x) for x in args.draws.split(",") if x]:
                rng = np.random.default_rng([d, 17])
                models[f"d{d}"] = adassp(add_noise(summed, std, rng), dim, spec.horizon, std, spec.linear.ridge)
            print(f"seed {seed} variant {variant}: dim {dim}, noise std {std:.2f}")
            lines = []
            for group in ("small", "large"):
                members = [f for f in firms if f.group == group]
                totals = {k: [0.0, 0.0] for k in ["local", *models]}
                for firm in members:
                    test = firm.demand_split[1]
                    actual = test.actual
                    row = []
                    if firm.firm_id in local:
                        row.append(wape(local[firm.firm_id], actual))
                        totals["local"][0] += np.abs(local[firm.firm_id] - actual).sum()
                        totals["local"][1] += np.abs(actual).sum()
                    for name, coef in models.items():
                        fc = forecast_units(tests[firm.firm_id], coef, test.scale * window_level(test, spec, variant))
                        row.append(wape(fc, actual))
                        totals[name][0] += np.abs(fc - actual).sum()
                        totals[name][1] += np.abs(actual).sum()
                    lines.append(f"{firm.firm_id:5} " + " ".join(f"{v:6.3f}" for v in row))
                figures = {k: t[0] / t[1] for k, t in totals.items() if t[1]}
                if "local" in figures:
                    dp = np.mean([figures[k] for k in figures if k.startswith("d")])
                    lines.append(
                        f"{group} "
                        + " ".join(f"{k} {v:.3f}" for k, v in figures.items())
                        + f"  ratio dp-mean {dp / figures['local']:.3f} nodp {figures['nodp'] / figures['local']:.3f}"
                    )
                else:
                    lines.append(f"{group} " + " ".join(f"{k} {v:.3f}" for k, v in figures.items()))
            print("\n".join(lines if args.verbose else [ln for ln in lines if ln.startswith(("small", "large"))]))


if __name__ == "__main__":
    main()
