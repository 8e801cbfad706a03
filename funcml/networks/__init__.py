"""Plain convolutional networks shared by the query heads and the pixel baselines (no fields here)."""
