"""fedinterest: simulations."""
