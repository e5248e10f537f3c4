"""fedinterest: simulations.datasets."""
