from funcml.tasks import query  # noqa: F401  (render, superres and impute demo stages)
