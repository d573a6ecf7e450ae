"""JULNet."""
