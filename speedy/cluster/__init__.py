"""Transport and topology of a torchrun cluster: the node map, the torchrun bootstrap, the RPC bridge. No RL."""
