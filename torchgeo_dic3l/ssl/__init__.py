"""Self-supervised building blocks: box matching, key queue, losses, momentum, DDP collectives."""
