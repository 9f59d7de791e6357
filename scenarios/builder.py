"""Build a chain scenario of any size: how `large.toml` was made, and what benchmarks scale with.

`python -m scenarios.builder --firms 240 --name large --seed 20251230 --out scenarios/large.toml`
writes a scenario file in the same layout as the hand-written default: about one firm in five is
large (long history), the rest are small firms with under a year of data; each firm buys from one
or two firms of the tier above, preferring its own region.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from silobridge.scenarios.schema import Scenario, scenario_from_dict

REGIONS = ("north", "south", "east", "west", "central", "coast")
TIER_SHARES = (
    ("supplier", "S", 0.0625),
    ("manufacturer", "M", 0.105),
    ("distributor", "D", 0.21),
    ("retailer", "R", 0.0),
)
SHOCKS = (
    {
        "name": "spring-slump",
        "scope": "chain",
        "start": "2024-03-18",
        "periods": 6,
        "demand_effect": -0.30,
        "risk_effect": 1.5,
    },
    {
        "name": "south-port-strike",
        "scope": "region",
        "region": "south",
        "start": "2025-06-02",
        "periods": 4,
        "demand_effect": -0.10,
        "risk_effect": 2.5,
    },
)


def chain_scenario(
    num_firms: int, *, seed: int, name: str, large_share: float = 0.2, rounds: int = 30
) -> dict[str, Any]:
    """A raw scenario (the dict a TOML file parses to) with `num_firms` firms over four tiers."""
    if num_firms < 4:
        raise ValueError("a chain needs at least 4 firms, one per tier")
    rnd = random.Random(seed)
    counts = {tier: max(1, round(num_firms * share)) for tier, _, share in TIER_SHARES if share}
    counts["retailer"] = num_firms - sum(counts.values())
    regions = REGIONS[: max(2, min(len(REGIONS), num_firms // 8))]
    firms: list[dict[str, Any]] = []
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for tier, prefix, _ in TIER_SHARES:
        by_tier[tier] = []
        for i in range(counts[tier]):
            large = rnd.random() < large_share
            firm = {
                "id": f"{prefix}{i + 1:03d}",
                "tier": tier,
                "size": round(rnd.uniform(5.5, 14.0), 1) if large else round(rnd.uniform(0.5, 2.5), 1),
                "history": rnd.randint(156, 208) if large else rnd.randint(36, 52),
                "region": rnd.choice(regions),
            }
            firms.append(firm)
            by_tier[tier].append(firm)
    links: list[dict[str, Any]] = []
    tiers = [tier for tier, _, _ in TIER_SHARES]
    for upstream, downstream in zip(tiers, tiers[1:], strict=False):
        served: set[str] = set()
        for customer in by_tier[downstream]:
            local = [f for f in by_tier[upstream] if f["region"] == customer["region"]] or by_tier[upstream]
            chosen = {rnd.choice(local)["id"]}
            if rnd.random() < 0.35:
                chosen.add(rnd.choice(by_tier[upstream])["id"])
            for supplier in sorted(chosen):
                links.append(
                    {"supplier": supplier, "customer": customer["id"], "share": round(rnd.uniform(0.5, 1.0), 2)}
                )
                served.add(supplier)
        for supplier in by_tier[upstream]:
            if supplier["id"] not in served:
                links.append(
                    {"supplier": supplier["id"], "customer": rnd.choice(by_tier[downstream])["id"], "share": 0.3}
                )
    shocks = [s for s in SHOCKS if s["scope"] == "chain" or s.get("region") in regions]
    return {
        "name": name,
        "description": f"{num_firms} firms, four tiers, {len(regions)} regions; weekly data ending 2025-12-29",
        "seed": seed,
        "end": "2025-12-29",
        "horizon": 4,
        "test_periods": 13,
        "large_size": 5.0,
        "items": max(12, min(60, num_firms // 6)),
        "firms": firms,
        "links": links,
        "shocks": shocks,
        "training": {
            "rounds": rounds,
            "local_epochs": 2,
            "batch_size": 64,
            "optimiser": "sgd",
            "learning_rate": 0.05,
            "momentum": 0.9,
            "strategy": "fedavg",
            "lags": 8,
            "hidden": 64,
        },
    }


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value[:4].isdigit() and value[4:5] == "-" else f'"{value}"'
    return str(value)


def _inline(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in table.items()) + " }"


def to_toml(raw: dict[str, Any]) -> str:
    """One line per firm, link and shock, like the hand-written default scenario."""
    lines = [
        f"# Built by: python -m scenarios.builder --firms {len(raw['firms'])} --name {raw['name']} --seed {raw['seed']}"
    ]
    for key in ("name", "description", "seed", "end", "horizon", "test_periods", "large_size", "items"):
        lines.append(f"{key} = {_value(raw[key])}")
    for key in ("firms", "links", "shocks"):
        lines += ["", f"{key} = ["] + [f"  {_inline(item)}," for item in raw[key]] + ["]"]
    lines += ["", "[training]"] + [f"{k} = {_value(v)}" for k, v in raw["training"].items()]
    return "\n".join(lines) + "\n"


def build(num_firms: int, *, seed: int, name: str, rounds: int = 30) -> Scenario:
    """The validated scenario (for benchmarks that need one in memory)."""
    return scenario_from_dict(_parsed(chain_scenario(num_firms, seed=seed, name=name, rounds=rounds)))


def _parsed(raw: dict[str, Any]) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(to_toml(raw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, default=20251230)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    raw = chain_scenario(args.firms, seed=args.seed, name=args.name, rounds=args.rounds)
    text = to_toml(raw)
    scenario_from_dict(_parsed(raw), source=str(args.out))  # never write a scenario that does not validate
    args.out.write_text(text)
    print(f"wrote {args.out}: {len(raw['firms'])} firms, {len(raw['links'])} links")


if __name__ == "__main__":
    main()
