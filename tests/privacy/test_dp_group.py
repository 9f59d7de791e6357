"""Group privacy conversion: valid, monotone, and never tighter than the exact Gaussian group bound."""

from __future__ import annotations

import dp_accounting as dpa
import pytest

from silobridge.privacy.dp import Account, AccountingSpec, group_epsilon

SPEC = AccountingSpec()


def gaussian_account(noise_multiplier: float, rounds: int) -> Account:
    return Account.empty(SPEC).compose(dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(noise_multiplier), rounds))


def test_group_of_one_is_the_plain_epsilon() -> None:
    account = gaussian_account(4.0, 10)
    result = group_epsilon(account, 1, 1e-5)
    assert result.epsilon == account.epsilon(1e-5) and result.delta == 1e-5


@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_conversion_meets_the_group_delta_and_is_an_upper_bound(group_size: int) -> None:
    account = gaussian_account(20.0, 10)
    result = group_epsilon(account, group_size, 1e-5)
    assert result.delta <= 1e-5
    assert result.epsilon == pytest.approx(group_size * account.epsilon(result.individual_delta))
    # For plain Gaussian releases the exact group guarantee is the Gaussian with sensitivity g.
    exact = gaussian_account(20.0 / group_size, 10).epsilon(1e-5)
    assert result.epsilon >= exact


def test_group_epsilon_grows_with_the_group() -> None:
    account = gaussian_account(20.0, 10)
    values = [group_epsilon(account, g, 1e-5).epsilon for g in (1, 2, 3, 5)]
    assert values == sorted(values)
