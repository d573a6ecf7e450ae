"""Training examples: synthetic batches now; preprocessed shards on object storage later."""
