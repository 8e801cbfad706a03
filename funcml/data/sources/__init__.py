"""Built-in data sources; importing this package registers them (order = detection order)."""

from funcml.data.sources import medmnist  # noqa: F401
