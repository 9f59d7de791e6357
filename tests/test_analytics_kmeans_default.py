"""K-means' default Lloyd rounds: 1, chosen for DP (each round is a release), planned from the parameters alone."""

from __future__ import annotations

from silobridge.contract.iterative_params import KMeansParams
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.server.query_plans import build_plan


def test_default_is_one_lloyd_round_after_the_grid() -> None:
    assert KMeansParams(k=4).max_iterations == 1
    # the budget preview calibrates the noise to the planned releases: the same with and without noise
    drafted = build_plan("kmeans", {"k": 4}, GENERATED_SCHEMA)
    noised = build_plan("kmeans", {"k": 4}, GENERATED_SCHEMA, noise_multiplier=5.0)
    assert drafted.planned_steps == noised.planned_steps == 2
    assert build_plan("kmeans", {"k": 4, "max_iterations": 10}, GENERATED_SCHEMA).planned_steps == 11
