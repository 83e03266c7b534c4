"""The outside world: settings, PostgreSQL (server or embedded), gateways, brokers."""
