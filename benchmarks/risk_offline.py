"""Offline dev loop for what each firm deploys for risk (issue 17, seed 4 R1): no Flower, no secure sum.

Builds the default scenario's firms for a seed in-process, sums their Newton statistics at each step, adds
the run's Gaussian noise (the same multiplier and sensitivity as `federation.linear_run`; draw d seeded with
[d, 17], not the run's own stream, and without the secure sum's quantisation), and runs each firm's
`clients.deploy.deploy_risk` on that global model. Prints each firm's test ROC-AUC: its local-only MLP, the
global logistic model, what it deploys (and its choice), and the difference the target judges; then the
worst judged difference (firms with 5+ test events) and the mean over firms. A rule changed in
`clients.personalise` is measured in seconds on every seed, not in a 400 s run.

    python -m benchmarks.risk_offline --seeds 1,2,3,4,5 --draws 0,1,2 [--verbose]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from benchmarks.linear_offline import firms_of
from silobridge.clients.deploy import deploy_risk, risk_training
from silobridge.clients.linear import newton_sensitivity, newton_statistics, risk_design, risk_row_norm
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import predict
from silobridge.federation.coordinator import baseline_instruction
from silobridge.server.linear import add_noise, linear_noise_multipliers, newton_step

JUDGED_EVENTS = 5
"""Test events from which the target judges a firm (the bench's rule)."""


def global_risk(firms, norm: Normaliser, spec, draw: int | None) -> np.ndarray:
    """The linear family's risk model: Newton steps from summed statistics, noised as the run noises them."""
    rows = [risk_training(f, norm) for f in firms]
    dim = rows[0][0].shape[1]
    std = 0.0
    if draw is not None:
        std = linear_noise_multipliers(spec)["risk"] * newton_sensitivity(risk_row_norm(dim - 1))
    rng = np.random.default_rng([draw if draw is not None else 0, 17])
    coef = np.zeros(dim)
    for _ in range(spec.linear.newton_steps):
        summed = sum(newton_statistics(x, y, coef) for x, y in rows)
        coef = newton_step(coef, add_noise(summed, std, rng), std, spec.linear.risk_ridge)
    return coef


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def override(assignments: str) -> None:
    """Set constants of `clients.personalise` (and their copies in `clients.deploy`) for a variant."""
    from silobridge.clients import deploy, personalise

    for item in filter(None, assignments.split(";")):
        name, value = item.split("=", 1)
        if not hasattr(personalise, name):
            raise SystemExit(f"--set: clients.personalise has no {name}")
        kind = type(getattr(personalise, name))
        for module in (personalise, deploy):
            if hasattr(module, name):
                setattr(module, name, kind(value))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="4")
    parser.add_argument("--draws", default="0,1,2", help="noise draws; 'nodp' for the non-private model")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--set", default="", help="NAME=VALUE;... overrides of the rule's constants (variants)")
    args = parser.parse_args()
    override(args.set)
    summary = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        settings, spec, all_firms = firms_of(seed)
        firms = [f for f in all_firms if f.trains("risk")]
        norm = Normaliser.from_ranges(spec.data.risk_feature_ranges, spec.data.risk_features)
        instruction = baseline_instruction(settings)
        local = {}
        for firm in firms:
            model, own = firm.local_risk_model(instruction)
            test = firm.risk_split[1]
            logits = predict(model, own.apply(test.features), device=firm.device)
            local[firm.firm_id] = auc(test.labels, np.asarray(logits, dtype=float))
        for token in args.draws.split(","):
            draw = None if token == "nodp" else int(token)
            coef = global_risk(firms, norm, spec, draw)
            diffs, judged = [], []
            for firm in firms:
                test = firm.risk_split[1]
                deployed = deploy_risk(firm, norm, coef, instruction)
                mine = auc(test.labels, deployed.predict(test.features))
                glob = auc(test.labels, expit(risk_design(norm.apply(test.features)) @ coef))
                events = int(test.labels.sum())
                diff = mine - local[firm.firm_id]
                if np.isfinite(diff):
                    diffs.append(diff)
                    if events >= JUDGED_EVENTS:
                        judged.append((diff, firm.firm_id))
                if args.verbose:
                    train_events = int(risk_training(firm, norm)[1].sum())
                    choice = deployed.choice
                    top = sorted(choice.validation.items(), key=lambda kv: kv[1])[:3]
                    print(
                        f"  s{seed} {token:>4} {firm.firm_id:4} ev {train_events:4}/{events:3}"
                        f" local {local[firm.firm_id]:.3f}"
                        f" global {glob:.3f} deployed {mine:.3f} ({choice.name}"
                        f"{'' if choice.hedge is None else f' h{choice.hedge:g}'}) diff {diff:+.4f}"
                        f"  val {', '.join(f'{k} {v:.4f}' for k, v in top)}"
                        f" local_only {choice.validation.get('local_only', float('nan')):.4f}"
                    )
            worst = min(judged) if judged else (float("nan"), "-")
            line = f"seed {seed} draw {token:>4}: worst judged {worst[0]:+.4f} ({worst[1]}), mean {np.mean(diffs):+.4f}"
            summary.append(line)
            print(line, flush=True)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
