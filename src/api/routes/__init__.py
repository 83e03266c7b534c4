"""HTTP routers: each translates requests into commands and queries, nothing more."""
