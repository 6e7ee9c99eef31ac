"""``bcauto new-plugin dataset``: generated striped images in two classes."""

USAGE = "`bcauto search --data $name:200`."

MODULE = '''\
"""$package: the data source $name for bcauto."""

import numpy as np

from bcauto import hookimpl
from bcauto.data import Dataset, validate_arrays
from bcauto.errors import BcautoError
from bcauto.specs import DatasetSpec

CLASSES = ("horizontal", "vertical")


def load(arg, image_size, options):
    """``--data $name[:N]``: N noisy striped images (default 200) in two classes; read your files here instead."""
    try:
        n = int(arg) if arg else 200
    except ValueError:
        raise BcautoError(f"--data $name:{arg}: expected a number of images, such as $name:200") from None
    rng = np.random.default_rng(options.get("seed", 0))
    labels = np.arange(n) % len(CLASSES)
    rows = np.arange(image_size) // 4 % 2 * 160 + 40
    horizontal = np.broadcast_to(rows[:, None, None], (image_size, image_size, 3))
    images = np.where(labels[:, None, None, None] == 0, horizontal, horizontal.transpose(1, 0, 2))
    images = images + rng.integers(0, 16, images.shape)
    # validate_arrays checks shapes and labels and converts dtypes, as every built-in source does
    images, labels, notes = validate_arrays(images.astype(np.uint8), labels, "$name", CLASSES)
    return Dataset(images, labels, CLASSES, source=f"$name:{n}", notes=tuple(notes))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="$name", load=load, description="noisy striped images in two classes"))
'''

THIRD_PARTY_IMPORTS = '''\
import numpy as np

'''

BCAUTO_IMPORTS = '''\
from bcauto.testing import check_dataset
'''

TEST = '''\
def test_component_works():
    check_dataset(component(), "20")  # bcauto's plugin contract, as bcauto checks its own sources
    data = component().load("20", 32, {"seed": 0})
    assert data.images.shape == (20, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (20,) and data.class_counts().tolist() == [10, 10]
    assert data.class_names == ("horizontal", "vertical")
'''
