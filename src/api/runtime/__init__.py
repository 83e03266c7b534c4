"""What runs the product: the container's wiring and the work beside the API (entrypoints)."""
