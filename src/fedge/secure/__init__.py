"""Secure aggregation and homomorphic encryption of uploads (docs/secure.md): the aggregator learns the (weighted)
sum of the devices' updates, not any one of them.

* `config`: the `secure:` section of `fedge run`;
* `quantize`: fixed-point encoding with checked headroom;
* `shamir`, `crypto`, `graph`: Shamir sharing, X25519 / HKDF / ChaCha20 primitives, the sharing graph;
* `secagg` (server, stages, aborts) and `secagg_device` (a device's side): SecAgg / SecAgg+ over the message layer;
* `he`: CKKS (TenSEAL) and Paillier (`phe`) encryption of uploads.

Only `config` and `quantize` import without the `secure` extra (`pip install fedge[secure]`); nothing here is
imported eagerly, so `fedge` itself never needs the extra.
"""
