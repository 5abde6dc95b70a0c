"""Recommendation-enabled edge caching (Sun et al., IEEE JSAC 41(3), 2023): E edge caches with soft hits,
heuristic and learned (independent or federated multi-agent DRL) replacement policies, Gymnasium/PettingZoo
environments. See docs/caching.md; the CLI is `fedge cache` (fedge.commands.cache)."""
