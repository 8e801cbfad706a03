"""Built-in data sources; importing this package registers them (order = detection order)."""

from funcml.data.sources import medmnist  # noqa: F401
from funcml.data.sources import mitbih  # noqa: F401
from funcml.data.sources import ucr  # noqa: F401
from funcml.data.sources import nifti  # noqa: F401
from funcml.data.sources import folder  # noqa: F401
