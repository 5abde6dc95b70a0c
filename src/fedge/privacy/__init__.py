"""Differential privacy: the `privacy:` config section (`config`), per-device accounting with Opacus's accountants
(`accounting`, optional extra `fedge[privacy]`), and the mechanisms' transforms of what devices release
(docs/privacy.md). The math (clipping, the Gaussian mechanism, adaptive clipping) is in `fedge.core.privacy`."""
