"""How rounds run: the in-process simulator (`simulator`) and the torch.distributed runtime share the round loop in
`rounds`."""
