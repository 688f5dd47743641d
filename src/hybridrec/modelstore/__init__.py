"""Model artifacts, the model store and the registry."""
