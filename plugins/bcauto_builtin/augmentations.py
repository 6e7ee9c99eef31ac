"""Built-in augmentation policies (placeholder until implemented)."""
