"""Training JULNet in one process: building, the training step, checkpoints and the local loop."""
