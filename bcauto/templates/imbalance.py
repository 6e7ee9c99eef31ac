"""``bcauto new-plugin imbalance``: cap every class at twice the smallest one."""

USAGE = 'in a study file\'s [search] table, `imbalance = ["$name"]`.'

MODULE = '''\
"""$package: the class-imbalance strategy $name for bcauto."""

import numpy as np

from bcauto import hookimpl
from bcauto.specs import ImbalancePlan, ImbalanceSpec

RATIO = 2


def apply(labels, seed):
    """Keep at most RATIO x the smallest class's size of every class, drawn at random (same seed, same plan)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    cap = RATIO * counts[counts > 0].min()
    keep = [rng.permutation(np.flatnonzero(labels == c))[:cap] for c in np.flatnonzero(counts)]
    return ImbalancePlan(indices=np.sort(np.concatenate(keep)))


@hookimpl
def register_imbalance_strategies(register):
    register(ImbalanceSpec(name="$name", apply=apply, description=f"every class cut to {RATIO}x the smallest class"))
'''

THIRD_PARTY_IMPORTS = '''\
import numpy as np

'''

BCAUTO_IMPORTS = '''\
from bcauto.testing import check_imbalance
'''

TEST = '''\
def test_component_works():
    check_imbalance(component())  # bcauto's plugin contract, as bcauto checks its own strategies
    labels = np.repeat([0, 1, 2], [50, 10, 4])
    plan = component().apply(labels, 0)
    assert plan.indices.dtype.kind == "i" and len(set(plan.indices.tolist())) == len(plan.indices)
    assert 0 <= plan.indices.min() and plan.indices.max() < len(labels)
    assert np.bincount(labels[plan.indices]).tolist() == [8, 8, 4]
    assert plan.indices.tolist() == component().apply(labels, 0).indices.tolist()
'''
