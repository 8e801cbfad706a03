from funcml.tasks import generate  # noqa: F401
