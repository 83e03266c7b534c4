"""Settlement with the platforms: per (platform, period) sagas, statements, reconciliation and cases."""
