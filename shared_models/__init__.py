"""fedinterest: shared_models."""
