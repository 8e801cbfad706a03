"""The inter-patient protocol of MIT-BIH beat classification (de Chazal et al. 2004; AAMI EC57).

``split=inter-patient``: the 44 non-paced records are divided into DS1 (training; here train and
val) and DS2 (test), so that no patient of the test is seen in training. The paced records 102,
104, 107 and 217 are left out (AAMI EC57), as are records of neither list. Val is a seeded choice
of ``round(n_DS1 * val_fraction)`` DS1 records (``split_seed``), or the DS1 records named in
``val_records``. DS1 or DS2 records that the folder lacks are named in a :class:`DataWarning`: a
folder holding only DS1 gives train and val with an empty test split (encode the DS2 records from
their own folder with the same option, and pass them to ``funcml classify --test-latents``).
"""

from __future__ import annotations

import warnings

import numpy as np

from funcml.data.registry import LoadOptions
from funcml.data.sources._common import parse_choice, parse_list
from funcml.errors import ConfigError, DataError, DataWarning

DS1: tuple[str, ...] = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
                        "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2: tuple[str, ...] = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
                        "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")
PACED: tuple[str, ...] = ("102", "104", "107", "217")
SPLIT_MODES = ("records", "inter-patient")


def split_mode(extra: dict[str, str], spec: str) -> str:
    """The ``split`` option: ``records`` (seeded record-level splits, the default) or ``inter-patient``."""
    return parse_choice(extra.get("split"), "split", SPLIT_MODES, "records", spec)


def inter_patient_splits(names: list[str], options: LoadOptions, extra: dict[str, str],
                         spec: str) -> dict[str, int]:
    """Split code per kept record (0 train, 1 val from DS1; 2 test from DS2); others are left out.

    Warns (:class:`DataWarning`) naming the DS1/DS2 records absent from ``names``.
    """
    if "test_records" in extra:
        raise ConfigError(f"{spec}: split=inter-patient tests on the DS2 records; test_records cannot be chosen")
    ds1, ds2 = [n for n in names if n in DS1], [n for n in names if n in DS2]
    if not ds1 and not ds2:
        raise DataError(f"{spec}: split=inter-patient: none of the MIT-BIH DS1/DS2 records is here "
                        f"(found {', '.join(names)}); DS1 = {' '.join(DS1)}, DS2 = {' '.join(DS2)}")
    val = parse_list(extra.get("val_records"))
    wrong = [r for r in val if r not in ds1]
    if wrong:
        raise ConfigError(f"{spec}: split=inter-patient: val_records must be DS1 records of this folder; "
                          f"{', '.join(wrong)} is not")
    if "val_records" not in extra:
        k = min(len(ds1), int(round(len(ds1) * options.val_fraction)))
        val = [ds1[j] for j in sorted(np.random.default_rng(options.split_seed).permutation(len(ds1))[:k])]
    missing2, missing1 = [r for r in DS2 if r not in ds2], [r for r in DS1 if r not in ds1]
    if missing2:
        state = "the test split is empty" if not ds2 else f"the test split has {len(ds2)} of {len(DS2)} DS2 records"
        warnings.warn(f"{spec}: split=inter-patient: DS2 record(s) {', '.join(missing2)} are not in this folder, so "
                      f"{state} (encode the DS2 records from their own folder with the same option and pass that "
                      f"latent set to `funcml classify --test-latents`)", DataWarning, stacklevel=3)
    if missing1:
        warnings.warn(f"{spec}: split=inter-patient: DS1 record(s) {', '.join(missing1)} are not in this folder, so "
                      f"train and val have {len(ds1)} of {len(DS1)} DS1 records", DataWarning, stacklevel=3)
    return {n: (1 if n in val else 0) for n in ds1} | {n: 2 for n in ds2}
