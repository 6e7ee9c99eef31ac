"""Built-in imbalance strategies."""
