"""Thin Ray entrypoints: parse arguments, build the config, hand the work to the julnet library."""
