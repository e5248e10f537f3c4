"""fedinterest: shared_models.crypto."""
