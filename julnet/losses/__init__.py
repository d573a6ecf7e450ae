"""JULNet's losses, one module per term of eq. 14, each returning its parts for logging."""
