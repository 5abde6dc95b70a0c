"""Pure tensor functions with a leading device dimension N. No I/O, no globals; randomness only through an
explicit `torch.Generator`."""
