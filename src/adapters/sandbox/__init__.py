"""The sandbox video platform: a fake partner server with fault knobs, run in its own process."""
