"""ckdlab."""
