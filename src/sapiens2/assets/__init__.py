"""Files shipped with the package (the demo models)."""
