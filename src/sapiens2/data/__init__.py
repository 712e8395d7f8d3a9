"""Data: task metadata, dataset formats, shards, transforms and synthetic humans."""
