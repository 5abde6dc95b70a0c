"""Small components that algorithms compose: pruning, neighbour selection and combining received models."""
