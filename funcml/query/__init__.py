"""Querying fields at coordinates of one's choice: rendering, super-resolution and imputation."""
