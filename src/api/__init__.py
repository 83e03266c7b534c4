"""The ways in: the HTTP API, the recharge web page and the `ledger` command line."""
