"""Distribution: platforms, products, the channel tree, funds, prices and stock (seed 000, S100)."""
