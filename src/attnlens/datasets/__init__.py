"""Real datasets that install offline."""
