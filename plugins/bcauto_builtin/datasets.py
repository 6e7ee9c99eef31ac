"""Built-in data sources: synthetic cells, .npz files, image folders, BloodMNIST (see bcauto_builtin.sources)."""

from bcauto import hookimpl
from bcauto.specs import DatasetSpec
from bcauto_builtin.sources import bloodmnist, folder, npz, synthetic


@hookimpl
def register_datasets(register):
    register(
        DatasetSpec("synthetic", synthetic.load, description="generated blood-smear images of 8 cell types (synthetic:N for N images)")
    )
    register(
        DatasetSpec(
            "npz", npz.load, claims=npz.claims, description="an .npz file: images + labels, or MedMNIST train/val splits (PATH.npz)"
        )
    )
    register(DatasetSpec("folder", folder.load, claims=folder.claims, description="an image folder with one subfolder per class (PATH)"))
    register(
        DatasetSpec(
            "bloodmnist",
            bloodmnist.load,
            available=bloodmnist.available,
            description="MedMNIST BloodMNIST, downloaded once (bloodmnist:28|64|128|224)",
        )
    )
