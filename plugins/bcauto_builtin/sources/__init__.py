"""The built-in data sources: synthetic cells, .npz files, image folders and the MedMNIST BloodMNIST download."""

# BloodMNIST / PBC label order (the folder names of an image-folder copy, sorted)
BLOOD_CELL_CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature_granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
# images per class in the PBC data set, which the synthetic generator mimics
BLOOD_CELL_COUNTS = (1004, 2514, 1238, 2302, 991, 1157, 2690, 1863)


def parse_positive_int(arg: str, what: str) -> int:
    """``arg`` as a positive int, or a BcautoError naming ``what`` it was meant to be."""
    from bcauto.errors import BcautoError

    try:
        value = int(arg)
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise BcautoError(f"{what}: expected a positive whole number, got {arg!r}")
    return value
