"""The scikit-learn API of funcml in one place.

``FieldEncoder`` (signals -> latents) and the latent classifiers::

    from sklearn.pipeline import make_pipeline
    from funcml.estimators import FieldEncoder, LatentMLPClassifier
    clf = make_pipeline(FieldEncoder(model="runs/model"), LatentMLPClassifier()).fit(images, labels)

Latent sets convert with ``LatentSet.to_dataframe()`` and ``LatentSet.torch_dataset()``.
"""

from funcml.tasks.classify import (LatentClassifier, LatentGraphClassifier, LatentKNNClassifier,
                                   LatentLogisticRegression, LatentMLPClassifier, LatentSVMClassifier,
                                   LatentXGBClassifier, load_classifier)
from funcml.tasks.field_encoder import FieldEncoder

__all__ = ["FieldEncoder", "LatentClassifier", "LatentMLPClassifier", "LatentXGBClassifier", "LatentLogisticRegression",
           "LatentSVMClassifier", "LatentKNNClassifier", "LatentGraphClassifier", "load_classifier"]
