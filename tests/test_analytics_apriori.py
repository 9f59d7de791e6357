"""Federated frequent itemsets: level-wise secure counts and a DP threshold equal pooled Apriori."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import apriori as firm_half
from silobridge.contract.iterative_params import AprioriParams
from silobridge.contract.query_protocol import QueryStep, clip_answer
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData
from silobridge.server.query_plans import PLANS, apriori
from tests.analytics_support import chain_firms, drive
from tests.conftest import DEFAULT

ITEMS = [f"item{i + 1:03d}" for i in range(12)]  # the default scenario's catalogue


@pytest.fixture(scope="module")
def chain() -> tuple[ChainData, list[FirmData]]:
    data, firms = chain_firms(str(DEFAULT))
    return data, list(firms)


def _pooled_matrix(firms: list[FirmData], params: AprioriParams) -> np.ndarray:
    """Every firm's bounded baskets, stacked: the pooled data the federated counts describe."""
    return np.vstack([firm_half.basket_matrix(f.orders, params) for f in firms])


def _brute_force(matrix: np.ndarray, items: list[str], min_support: float, max_size: int) -> dict[tuple, float]:
    """Every itemset up to max_size with at least min_support baskets, by direct enumeration."""
    out = {}
    for size in range(1, max_size + 1):
        for combo in itertools.combinations(range(len(items)), size):
            support = float(matrix[:, list(combo)].all(axis=1).sum())
            if support >= min_support:
                out[tuple(sorted(items[i] for i in combo))] = support
    return out


@pytest.mark.parametrize(
    "params",
    [
        {"min_support": 20, "max_size": 3},
        {"min_support": 150, "max_size": 4, "max_baskets": 250, "max_basket_items": 3},
        {"min_support": 5, "max_size": 2, "max_baskets": 30},
    ],
)
def test_federated_apriori_equals_pooled_apriori(chain: tuple[ChainData, list[FirmData]], params: dict) -> None:
    _, firms = chain
    plan = PLANS["frequent_itemsets"]({"items": ITEMS, **params}, schema=GENERATED_SCHEMA)
    result, trace = drive(plan, firms)
    assert trace.clipped == 0
    found = {tuple(entry["items"]): entry["support"] for entry in result["itemsets"]}
    expected = _brute_force(_pooled_matrix(firms, plan.params), ITEMS, plan.params.min_support, plan.params.max_size)
    assert found == expected
    assert len(found) > len(ITEMS) // 2  # the comparison is not vacuous


def test_the_planted_triple_is_the_most_frequent_triple(chain: tuple[ChainData, list[FirmData]]) -> None:
    data, firms = chain
    result, _ = drive(apriori.make_plan({"items": ITEMS, "min_support": 20}, schema=GENERATED_SCHEMA), firms)
    triples = [entry for entry in result["itemsets"] if len(entry["items"]) == 3]
    assert tuple(triples[0]["items"]) == data.basket_patterns[0]


def test_with_noise_the_planted_patterns_are_found_and_nothing_rare_survives(
    chain: tuple[ChainData, list[FirmData]],
) -> None:
    """Threshold min_support + 3 sigma: an itemset under min_support survives with probability < 0.14%
    per candidate; each planted pattern's exact count clears threshold + 5 sigma, so it is found."""
    data, firms = chain
    multiplier = 0.02
    params = {"items": ITEMS, "min_support": 30, "max_baskets": 200, "max_basket_items": 4, "threshold_sigmas": 3}
    exact_plan = apriori.make_plan(params, schema=GENERATED_SCHEMA)
    exact = {tuple(e["items"]): e["support"] for e in drive(exact_plan, firms)[0]["itemsets"]}
    plan = apriori.make_plan(params, schema=GENERATED_SCHEMA, noise_multiplier=multiplier, unit="firm")
    result, trace = drive(plan, firms, noise_multiplier=multiplier, seed=1, unit="firm")
    sigmas = {step.params["level"]: multiplier * step.l2_bound for step in trace.steps}
    found = {tuple(e["items"]): e["support"] for e in result["itemsets"]}
    assert [level["noise_std"] for level in result["levels"]] == pytest.approx([sigmas[k] for k in sorted(sigmas)])
    for pattern in data.basket_patterns:
        level = len(pattern)
        assert exact[pattern] >= 30 + 8 * sigmas[level]  # the premise of the statement
        assert pattern in found
        assert abs(found[pattern] - exact[pattern]) <= 5 * sigmas[level]
    matrix = np.vstack([firm_half.basket_matrix(f.orders, plan.params) for f in firms])
    vocabulary = {item: i for i, item in enumerate(ITEMS)}
    for itemset, noisy in found.items():
        true = matrix[:, [vocabulary[i] for i in itemset]].all(axis=1).sum()
        assert true >= 30  # no false positive
        assert abs(noisy - true) <= 5 * sigmas[len(itemset)]
    assert found != exact  # noise was added


def test_candidate_generation_joins_and_prunes() -> None:
    frequent = [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d")]
    assert apriori.candidates_after(frequent) == [("a", "b", "c")]  # abd: ad is not frequent
    triples = [("a", "b", "c"), ("a", "b", "d"), ("a", "c", "d"), ("b", "c", "d"), ("a", "c", "e")]
    assert apriori.candidates_after(triples) == [("a", "b", "c", "d")]
    assert apriori.candidates_after([]) == []


def test_a_firm_contribution_is_bounded() -> None:
    """A firm with many large baskets: at most max_baskets baskets of max_basket_items items count, so its
    vector respects the step's bounds and clipping changes nothing."""
    items = [f"x{i}" for i in range(10)]
    orders = pd.DataFrame({"order_id": np.repeat([f"o{n}" for n in range(40)], 10), "item": np.tile(items, 40)})
    firm = FirmData("F1", None, None, orders)
    plan = apriori.make_plan(
        {"items": items, "min_support": 1, "max_baskets": 25, "max_basket_items": 4, "max_size": 3},
        schema=GENERATED_SCHEMA,
    )
    step = plan.first()
    while step is not None:
        raw = firm_half.local(step, firm)
        assert clip_answer(step, raw, firm="F1").clipped == 0
        assert np.linalg.norm(raw) <= step.l2_bound and raw.max() <= 25
        assert raw.sum() == 25 * len(list(itertools.combinations(range(4), step.params["level"])))
        step = plan.next(raw, 1)
    assert max(len(e["items"]) for e in plan.result()["itemsets"]) == 3
    # Items outside the vocabulary are ignored; a firm without orders contributes zeros.
    foreign = pd.concat([orders, pd.DataFrame({"order_id": ["o1", "z9"], "item": ["y1", "y2"]})])
    np.testing.assert_array_equal(
        firm_half.basket_matrix(foreign, plan.params), firm_half.basket_matrix(orders, plan.params)
    )
    fresh = apriori.make_plan({"items": items}, schema=GENERATED_SCHEMA).first()
    np.testing.assert_array_equal(firm_half.local(fresh, FirmData("F2", None, None)), np.zeros(10))


def test_one_basket_moves_a_level_by_at_most_its_record_bound_tight_when_it_displaces_a_disjoint_one() -> None:
    """A firm at its cap (max_baskets 1) holding basket 'old' = {a, b, c} gains 'new' = {d, e, f}, whose digest
    sorts first and pushes 'old' out: +1 on three counts, -1 on three others, sqrt(6) = sqrt(2 C(3, size))
    at sizes 1 and 2, exactly the bound (twice one basket's changed counts inside the root, not 2 outside)."""
    items = list("abcdef")
    old = pd.DataFrame({"order_id": "old", "item": list("abc")})
    grown = pd.concat([pd.DataFrame({"order_id": "new", "item": list("def")}), old])
    params = {"items": items, "min_support": 1, "max_baskets": 1, "max_basket_items": 3, "max_size": 2}
    plan = apriori.make_plan(params, schema=GENERATED_SCHEMA)
    step = plan.first()
    pairs = [tuple(c) for c in itertools.combinations(items, 2)]
    while step is not None:
        before = firm_half.local(step, FirmData("F", None, None, old))
        after = firm_half.local(step, FirmData("F", None, None, grown))
        assert step.record_l2_bound == pytest.approx(np.sqrt(6))
        assert np.linalg.norm(after - before) == pytest.approx(step.record_l2_bound, rel=1e-12)
        step = plan.next(np.ones(step.length), 1) if step.params["level"] == 1 else None
        if step is not None:
            assert [tuple(c) for c in step.params["candidates"]] == pairs


def test_the_balanced_threshold_on_known_values() -> None:
    """max(min_support, sigma Phi^-1(1 - absent_kept / m)): Phi^-1(0.99) = 2.3263478740."""
    assert apriori.balanced_threshold(150.0, 44.0, 10, 0.1) == 150.0  # min_support binds
    assert apriori.balanced_threshold(20.0, 44.0, 10, 0.1) == pytest.approx(44.0 * 2.3263478740, rel=1e-9)
    assert apriori.balanced_threshold(20.0, 0.0, 10, 0.1) == 20.0  # without noise: min_support exactly
    # More candidates, a higher guard: 1 - 0.1 / 1000 -> Phi^-1 = 3.7190164855.
    assert apriori.balanced_threshold(1.0, 1.0, 1000, 0.1) == pytest.approx(3.7190164855, rel=1e-9)
    noisy = {"items": ITEMS, "min_support": 20}
    plan = apriori.make_plan(noisy, schema=GENERATED_SCHEMA, noise_multiplier=5.0)
    assert plan.threshold() == pytest.approx(apriori.balanced_threshold(20.0, plan.sigma(), 12, 0.1))
    fixed = apriori.make_plan({**noisy, "threshold_sigmas": 3}, schema=GENERATED_SCHEMA, noise_multiplier=5.0)
    assert fixed.threshold() == pytest.approx(20.0 + 3 * fixed.sigma())


def test_with_noise_absent_itemsets_pass_at_the_stated_rate() -> None:
    """Items nobody orders, counted with noise: the balanced rule keeps each with probability absent_kept / m
    (0.1 / 40 = 0.25%); over 4,000 levels of 40 the kept share is within 4 standard errors of that."""
    rng = np.random.default_rng(7)
    sigma, m, levels = 30.0, 40, 4000
    threshold = apriori.balanced_threshold(5.0, sigma, m, 0.1)
    kept = (rng.normal(0.0, sigma, size=(levels, m)) >= threshold).mean()
    rate = 0.1 / m
    assert abs(kept - rate) <= 4 * np.sqrt(rate * (1 - rate) / (levels * m))


def test_the_candidate_cap_stops_the_query() -> None:
    items = [f"x{i:02d}" for i in range(20)]
    orders = pd.DataFrame({"order_id": np.repeat(["o1", "o2"], 20), "item": np.tile(items, 2)})
    params = {"items": items, "min_support": 1, "max_candidates": 100, "max_basket_items": 20}
    result, trace = drive(apriori.make_plan(params, schema=GENERATED_SCHEMA), [FirmData("F1", None, None, orders)])
    assert len(trace.steps) == 1
    assert result["stopped"] == "190 candidates of size 2 exceed max_candidates"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "items"),
        ({"items": []}, "items"),
        ({"items": ["a", "a"]}, "items"),
        ({"items": ["a", " "]}, "items"),
        ({"items": ["a"], "min_support": 0}, "min_support"),
        ({"items": ["a"], "max_size": 9}, "max_size"),
        ({"items": ["a", "b", "c"], "max_candidates": 2}, "items"),
        ({"items": ["a"], "threshold_sigmas": -1}, "threshold_sigmas"),
        ({"items": ["a"], "absent_kept": 0}, "absent_kept"),
    ],
)
def test_malformed_params_are_rejected_naming_the_field(params: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        apriori.make_plan(params, schema=GENERATED_SCHEMA)
    assert info.value.field == f"params.{field}"


def test_a_malformed_step_is_a_protocol_error(chain: tuple[ChainData, list[FirmData]]) -> None:
    step = apriori.make_plan({"items": ITEMS}, schema=GENERATED_SCHEMA).first()
    params = {**step.params, "level": 2, "candidates": [["item002", "item001"]]}
    bad = QueryStep.build(step.query, 1, length=1, value_bound=step.value_bound, l2_bound=step.l2_bound, params=params)
    with pytest.raises(ProtocolError, match="firm 'R1'.*not a sorted set of 2 known items"):
        firm_half.local(bad, chain[1][0])
