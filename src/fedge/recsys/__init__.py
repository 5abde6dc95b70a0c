"""Federated recommendation (paper sections II.B and II.C): collaborative filtering, deep and meta-learning
recommenders whose users' interactions never leave their devices, in client-server and decentralized form."""
