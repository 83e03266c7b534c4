"""Settlement with the platforms: sagas per (platform, period), reconciliation and cases."""
