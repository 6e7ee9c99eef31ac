"""``bcauto new-plugin shift``: uneven illumination (a vignette), one more corruption for shifted validation."""

USAGE = ("every study then scores it with the other shifts on its shifted validation copy, and "
         "`bcauto evaluate --shift` reports it.")

MODULE = '''\
"""$package: the shift $name for bcauto."""

import numpy as np

from bcauto import hookimpl
from bcauto.specs import ShiftSpec


def apply(images, severity, rng):
    """Light falling off towards the corners, its centre a little off for each image.

    ``images``: uint8 N x H x W x 3; ``severity``: 1 (mild) to 5 (heavy); ``rng``: a NumPy generator, the
    only source of randomness, so the same generator gives the same batch.
    """
    n, h, w, _ = images.shape
    y, x = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    cy, cx = rng.uniform(-0.3, 0.3, size=(2, n, 1, 1))
    gain = np.clip(1 - 0.06 * severity * ((x - cx) ** 2 + (y - cy) ** 2), 0, 1)
    return np.clip(np.rint(images * gain[..., None]), 0, 255).astype(np.uint8)


@hookimpl
def register_shifts(register):
    # group "corruption": damage within one lab; "lab" for what differs between labs (stain, optics, ...)
    register(ShiftSpec(name="$name", apply=apply, severities=(1, 2, 3, 4, 5), group="corruption",
                       description="uneven illumination: a vignette, darker towards the corners"))
'''

THIRD_PARTY_IMPORTS = '''\
import numpy as np

'''

BCAUTO_IMPORTS = '''\
from bcauto.shift import corrupt
from bcauto.testing import check_shift
'''

TEST = '''\
def test_component_works():
    spec = component()
    check_shift(spec)  # bcauto's plugin contract, as bcauto checks its own shifts
    images = np.full((3, 32, 32, 3), 200, np.uint8)
    mild, heavy = (spec.apply(images, severity, np.random.default_rng(0)) for severity in (1, 5))
    assert mild.shape == images.shape and mild.dtype == np.uint8
    assert np.array_equal(mild, spec.apply(images, 1, np.random.default_rng(0)))
    assert images.mean() - heavy.mean() > images.mean() - mild.mean() > 1.0
    # as the study applies it to its validation copy
    assert corrupt(images, spec, 3, seed=0).shape == images.shape
'''
