"""The datasets funcml reads out of the box: what each is, its licence, where it lives, how to get it.

Datasets live under a *data root*: ``--root``, else ``$FUNCML_DATA``, else ``~/.funcml/data``, in the
layout of :attr:`Dataset.folder` (``medmnist/breastmnist_64.npz``, ``ecg/mitdb-ds1/``, ...). MedMNIST
files are also found in the ``medmnist`` package's cache (``$FUNCML_MEDMNIST_ROOT`` or ``~/.medmnist``).
``funcml datasets`` lists them; ``funcml datasets fetch NAME`` downloads those with an official
download (:mod:`funcml.data.fetch`); for the others :func:`missing_message` says where to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from funcml import environment
from funcml.errors import DataError

DATA_ROOT_ENV = environment.DATA
MEDMNIST_SIZES = (28, 64, 128, 224)

# The MedMNIST v2 / MedMNIST+ collections (Yang et al., Scientific Data 2023), modality of each.
MEDMNIST_MODALITIES = {
    "pathmnist": "colon pathology, RGB", "chestmnist": "chest X-ray", "dermamnist": "dermatoscopy, RGB",
    "octmnist": "retinal OCT", "pneumoniamnist": "chest X-ray", "retinamnist": "fundus camera, RGB",
    "breastmnist": "breast ultrasound", "bloodmnist": "blood cell microscopy, RGB",
    "tissuemnist": "kidney cortex microscopy", "organamnist": "abdominal CT (axial)",
    "organcmnist": "abdominal CT (coronal)", "organsmnist": "abdominal CT (sagittal)",
    "organmnist3d": "abdominal CT, 3D", "nodulemnist3d": "chest CT, 3D", "adrenalmnist3d": "adrenal shapes (CT), 3D",
    "fracturemnist3d": "chest CT, 3D", "vesselmnist3d": "brain vessel shapes (MRA), 3D",
    "synapsemnist3d": "electron microscopy, 3D",
}

# The 22 records of the standard inter-patient training set DS1 (de Chazal et al. 2004).
MITDB_DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203",
             "205", "207", "208", "209", "215", "220", "223", "230")


@dataclass(frozen=True)
class Dataset:
    """One supported dataset. ``folder`` is its place under the data root; ``fetch`` names its download."""

    name: str
    modality: str
    licence: str
    size: str
    obtain: str
    folder: str
    data_hint: str
    fetch: str | None = None  # "medmnist", "physionet" or None (by hand)


STATIC_DATASETS = (
    Dataset("demo", "breast ultrasound, 28x28 (BreastMNIST)", "CC BY 4.0", "780 images, 546 / 78 / 156",
            "embedded in funcml", "", "demo"),
    Dataset("mitdb", "ECG, 2 leads, 360 Hz (MIT-BIH Arrhythmia)", "ODC-By 1.0", "48 records of 30 min, ~100 MB",
            "PhysioNet, https://physionet.org/content/mitdb/1.0.0/", "ecg/mitdb", "the folder", "physionet"),
    Dataset("mitdb-ds1", "ECG beats of the 22 DS1 records of MIT-BIH", "ODC-By 1.0", "22 records, ~43 MB",
            "PhysioNet, https://physionet.org/content/mitdb/1.0.0/ (records " + " ".join(MITDB_DS1) + ")",
            "ecg/mitdb-ds1", "the folder", "physionet"),
    Dataset("ecg5000", "ECG beats, 140 samples (UCR ECG5000)", "UCR archive terms", "5,000 beats, 5 classes",
            "https://www.timeseriesclassification.com/description.php?Dataset=ECG5000 (ECG5000_TRAIN.txt)",
            "ecg/ecg5000", "the .txt file"),
    Dataset("kvasir-seg", "colonoscopy, RGB, polyp masks", "research and education use", "1,000 image/mask pairs",
            "https://datasets.simula.no/kvasir-seg/ (unzip: images/ and masks/)", "seg/kvasir-seg", "the folder"),
    Dataset("isbi2012-em", "electron microscopy, membrane masks", "research use", "30 slices of 512x512",
            "ISBI 2012 EM segmentation challenge, https://imagej.net/events/isbi-2012-segmentation-challenge "
            "(slices as image/N.png, labels as label/N.png)", "seg/isbi2012-em", "the folder"),
    Dataset("mricron", "brain MRI volumes, NIfTI", "BSD (MRIcron)", "5 volumes, 181x217x181",
            "https://github.com/neurolabusc/MRIcron (Resources/templates: ch2.nii.gz, ch2bet.nii.gz ...)",
            "volumes/mricron", "the folder"),
)


def demo_path() -> Path:
    """Path of the embedded BreastMNIST 28x28 file (the data of ``funcml demo``)."""
    return Path(str(resources.files("funcml.data") / "assets" / "breastmnist.npz"))


def data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root``, else ``$FUNCML_DATA``, else ``~/.funcml/data``."""
    return Path(root or environment.data_root() or Path.home() / ".funcml" / "data").expanduser()


def medmnist_caches() -> list[Path]:
    """The ``medmnist`` package's cache folders: ``$FUNCML_MEDMNIST_ROOT`` and ``~/.medmnist``."""
    env = environment.medmnist_root()
    return ([env] if env else []) + [Path.home() / ".medmnist"]


def medmnist_info() -> dict[str, dict]:
    """The ``medmnist`` package's INFO (file URLs, MD5s, sample counts); empty when it is not installed."""
    try:
        import medmnist
    except ImportError:
        return {}
    return {flag: info for flag, info in medmnist.INFO.items() if flag in MEDMNIST_MODALITIES}


def medmnist_file(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_dataset(flag: str, info: dict) -> Dataset:
    n = info.get("n_samples", {})
    counts = " / ".join(f"{n[s]:,}" for s in ("train", "val", "test") if s in n)
    return Dataset(flag, MEDMNIST_MODALITIES[flag], info.get("license", "CC BY 4.0"),
                   f"{sum(n.values()):,} {'volumes' if flag.endswith('3d') else 'images'}, {counts}",
                   "Zenodo (the medmnist package's URLs), sizes " + "/".join(map(str, MEDMNIST_SIZES)),
                   "medmnist", f"medmnist:{flag}@SIZE", "medmnist")


def datasets() -> list[Dataset]:
    """Every supported dataset: the static ones, then the MedMNIST collections (when medmnist is installed)."""
    info = medmnist_info()
    return [*STATIC_DATASETS, *(medmnist_dataset(flag, info[flag]) for flag in MEDMNIST_MODALITIES if flag in info)]


def parse_name(text: str) -> tuple[Dataset, int | None]:
    """``NAME`` or ``NAME@SIZE`` (MedMNIST) -> the dataset and its size (None where sizes do not apply)."""
    name, _, size_text = text.lower().partition("@")
    found = {d.name: d for d in datasets()}
    if name not in found:
        hint = "" if medmnist_info() else " (MedMNIST names need the medmnist package: pip install --no-deps medmnist)"
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(found)}{hint}")
    dataset = found[name]
    if dataset.fetch != "medmnist":
        if size_text:
            raise DataError(f"{name} has no sizes to choose from (@{size_text})")
        return dataset, None
    size = int(size_text) if size_text.isdigit() else 28 if not size_text else -1
    if size not in MEDMNIST_SIZES:
        raise DataError(f"{text}: MedMNIST sizes are {', '.join(map(str, MEDMNIST_SIZES))}")
    return dataset, size


def local_copies(dataset: Dataset, root: Path) -> list[str]:
    """Where ``dataset`` is present: paths (MedMNIST: ``SIZE at FOLDER``); empty when it is not."""
    if dataset.name == "demo":
        return ["embedded"]
    if dataset.fetch == "medmnist":
        return [f"{size} at {folder}" for folder in (root / "medmnist", *medmnist_caches())
                for size in MEDMNIST_SIZES if (folder / medmnist_file(dataset.name, size)).is_file()]
    path = root / dataset.folder
    return [str(path)] if path.is_dir() and any(path.iterdir()) else []


def missing_message(dataset: Dataset, root: Path, size: int | None = None, offline: bool = False) -> str:
    """What to download and where to put it, for a dataset that is not present.

    ``offline``: the download itself failed, so the message names the files to get by hand only.
    """
    fetch = "" if offline or not dataset.fetch else \
        f"run `funcml datasets fetch {dataset.name}{'' if size is None else f'@{size}'}`, or "
    if dataset.fetch == "medmnist":
        fname = medmnist_file(dataset.name, size or 28)
        suffix = "" if (size or 28) == 28 else f"_{size}"
        info = medmnist_info().get(dataset.name, {})
        url = info.get(f"url{suffix}", "Zenodo (record 10519652)")
        md5 = f" (MD5 {info[f'MD5{suffix}']})" if f"MD5{suffix}" in info else ""
        return (f"{dataset.name} at size {size or 28} is not present: {fetch}download {url}{md5} "
                f"and put it at {root / 'medmnist' / fname}")
    if dataset.fetch == "physionet":
        return (f"{dataset.name} is not present: {fetch}download the .hea, .dat and .atr files of its records "
                f"from {dataset.obtain} and put them in {root / dataset.folder}")
    return f"{dataset.name} is not present: download it from {dataset.obtain} and put it in {root / dataset.folder}"


def locate(name: str, root: str | Path | None = None) -> Path:
    """The local folder (or MedMNIST file) of ``NAME[@SIZE]`` under the data root or caches.

    Raises :class:`DataError` with :func:`missing_message` when it is not there.
    """
    dataset, size = parse_name(name)
    base = data_root(root)
    if dataset.name == "demo":
        return demo_path()
    if dataset.fetch == "medmnist":
        for folder in (base / "medmnist", *medmnist_caches()):
            if (folder / medmnist_file(dataset.name, size or 28)).is_file():
                return folder / medmnist_file(dataset.name, size or 28)
    elif local_copies(dataset, base):
        return base / dataset.folder
    raise DataError(missing_message(dataset, base, size))
