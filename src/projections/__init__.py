"""Read models: one module per view, kept up to date from the applications' logs."""
