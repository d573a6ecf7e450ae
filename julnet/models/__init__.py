"""JULNet's networks: generator, discriminators, uncertainty module, SyncNet and VGG-19 features."""
