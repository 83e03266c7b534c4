"""Member cards: merchants, activities, main, shared and intimate cards, wallets (seed 001)."""
