"""Server half of federated frequent itemsets (Apriori): one release of secure counts per itemset size.

Level 1 counts every item of the public vocabulary; each later level counts the candidates built by
Apriori's join (two frequent sets sharing all but their last item) and prune (every subset one item
smaller must be frequent). A candidate is frequent when its released, noisy count reaches the
level's threshold (`threshold`): by default max(min_support, sigma Phi^-1(1 - absent_kept / m)) for
m candidates and noise std sigma. The first term balances the two errors (with symmetric noise, an
itemset d above min_support is missed exactly as often as one d below is kept); the second stops
itemsets that no basket holds from passing by noise alone (each with probability absent_kept / m,
so at most absent_kept expected per level). `threshold_sigmas` sets min_support + that many sigma
instead (an itemset under min_support then survives with probability below Phi(-threshold_sigmas)).

Record level: the record is one basket (an order), of which a firm counts at most `max_basket_items`
items; one basket adds 1 to at most m_b = min(C(max_basket_items, size), candidates) counts, and may
push another basket out of the firm's `max_baskets` cap: one basket's +1s and another's -1s, so a
level's counts move by at most sqrt(2 m_b) in L2 (`CAP_DISPLACEMENT` inside the root).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import AprioriParams
from silobridge.contract.query_params import param_error, parse_params
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.errors import ProtocolError

NAME = "frequent_itemsets"

Itemset = tuple[str, ...]
CAP_DISPLACEMENT = 2.0
"""A basket added to a firm over its cap pushes another out: +1 on one basket's itemsets and -1 on the
other's, so twice one basket's count of changed entries (L2 grows by sqrt(2), not 2)."""
NEIGHBOURS = "add or remove one order basket (at most max_basket_items of its items counted)"


def candidates_after(frequent: Sequence[Itemset]) -> list[Itemset]:
    """Apriori join and prune: the (k + 1)-sets all of whose k-subsets are in `frequent` (sorted sets)."""
    known = set(frequent)
    ordered = sorted(known)
    out: list[Itemset] = []
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if first[:-1] != second[:-1]:
                break  # sorted: later sets share even less of the prefix
            joined = (*first, second[-1])
            if all(subset in known for subset in itertools.combinations(joined, len(joined) - 1)):
                out.append(joined)
    return out


def count_bound(params: AprioriParams, level: int, candidates: int) -> float:
    """L2 bound of a firm's counts: each of its <= max_baskets baskets adds 1 to at most
    min(C(max_basket_items, level), candidates) candidates, and no count exceeds max_baskets."""
    per_basket = min(math.comb(params.max_basket_items, level), candidates)
    return params.max_baskets * math.sqrt(per_basket)


def basket_bound(params: AprioriParams, level: int, candidates: int) -> float:
    """L2 change of a level's counts when one basket is added or removed (displacement included): tight
    when the added and the pushed-out basket share no itemset of the level."""
    return math.sqrt(CAP_DISPLACEMENT * min(math.comb(params.max_basket_items, level), candidates))


def balanced_threshold(min_support: float, sigma: float, candidates: int, absent_kept: float) -> float:
    """max(min_support, the noisy count an absent itemset reaches with probability absent_kept / candidates)."""
    if sigma <= 0.0:
        return min_support
    guard = sigma * float(NormalDist().inv_cdf(1.0 - absent_kept / max(candidates, 1)))
    return max(min_support, guard)


class AprioriPlan:
    """Level by level until no candidate is left, `max_size` is reached, or a level exceeds `max_candidates`."""

    name = NAME

    def __init__(self, params: AprioriParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else NEIGHBOURS
        self.level = 1
        self.candidates: list[Itemset] = sorted((item,) for item in params.items)
        self.frequent: dict[Itemset, float] = {}
        self.levels: list[dict[str, Any]] = []
        self.stopped = ""

    @property
    def planned_steps(self) -> int:
        return self.params.max_size

    def _step(self) -> QueryStep:
        return QueryStep.build(
            NAME,
            self.level - 1,
            length=len(self.candidates),
            value_bound=float(self.params.max_baskets),
            l2_bound=count_bound(self.params, self.level, len(self.candidates)),
            record_l2_bound=basket_bound(self.params, self.level, len(self.candidates)),
            params={
                "query": self.params.model_dump(mode="json"),
                "level": self.level,
                "candidates": [list(c) for c in self.candidates],
            },
        )

    def sigma(self) -> float:
        """Noise std of every count of the current level."""
        return self.noise_multiplier * self._step().sensitivity(self.unit)

    def threshold(self) -> float:
        """The noisy count a candidate of the current level must reach."""
        if self.params.threshold_sigmas is not None:
            return self.params.min_support + self.params.threshold_sigmas * self.sigma()
        return balanced_threshold(self.params.min_support, self.sigma(), len(self.candidates), self.params.absent_kept)

    def first(self) -> QueryStep:
        return self._step()

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        counts = np.asarray(total, dtype=np.float64).reshape(-1)
        if counts.size != len(self.candidates):
            raise ProtocolError(
                f"{NAME}: level {self.level} release has {counts.size} counts, expected {len(self.candidates)}"
            )
        threshold = self.threshold()
        sigma = self.sigma()
        survivors = [(c, float(n)) for c, n in zip(self.candidates, counts, strict=True) if n >= threshold]
        self.frequent.update(survivors)
        self.levels.append(
            {
                "size": self.level,
                "candidates": len(self.candidates),
                "threshold": threshold,
                "noise_std": sigma,
                "frequent": len(survivors),
            }
        )
        following = candidates_after([c for c, _ in survivors])
        if self.level >= self.params.max_size:
            self.stopped = "max_size reached"
        elif not following:
            self.stopped = "no candidates left"
        elif len(following) > self.params.max_candidates:
            self.stopped = f"{len(following)} candidates of size {self.level + 1} exceed max_candidates"
        if self.stopped:
            return None
        self.level += 1
        self.candidates = following
        return self._step()

    def result(self) -> dict[str, Any]:
        ordered = sorted(self.frequent.items(), key=lambda entry: (len(entry[0]), -entry[1], entry[0]))
        return {
            "query": NAME,
            "itemsets": [{"items": list(items), "support": support} for items, support in ordered],
            "levels": self.levels,
            "stopped": self.stopped,
            "min_support": self.params.min_support,
            "threshold_rule": (
                f"min_support + {self.params.threshold_sigmas:g} noise stds"
                if self.params.threshold_sigmas is not None
                else f"max(min_support, noise std x Phi^-1(1 - {self.params.absent_kept:g} / candidates))"
            ),
            "contribution_bound": {
                "max_baskets": self.params.max_baskets,
                "max_basket_items": self.params.max_basket_items,
            },
        }


def make_plan(
    params: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> AprioriPlan:
    """A frequent-itemset plan over the firms' order baskets (`items`: the public item vocabulary)."""
    parsed = parse_params(AprioriParams, params, query=NAME)
    if len(parsed.items) > parsed.max_candidates:
        raise param_error(NAME, "items", f"{len(parsed.items)} items exceed max_candidates = {parsed.max_candidates}")
    return AprioriPlan(parsed, noise_multiplier=noise_multiplier, unit=unit)
