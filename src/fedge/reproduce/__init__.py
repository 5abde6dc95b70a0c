"""`fedge reproduce`: rerun the DPMN paper's section IV experiments as one resumable grid and write a report.

The paper (Federated edge recommendation, §IV) makes three claims this package tests from numbers:

* (a) a cosine-similarity threshold δ = 0.2 gives the best balance of model quality and traffic (its Fig. 4);
* (b) DPMN saves on average 45.4% of the traffic of decentralized training (DFL) at equal rounds;
* (c) similarity-based neighbour selection beats random selection (DPMN-R) at every number of devices (its Fig. 5).

`--studies` adds issue 17's: DPMN's byte saving decomposed (pruning part, neighbour part, accuracy at equal bytes),
a density sweep, and data-scarcity and label-skew sweeps with every algorithm set against local training.

Modules: `grid` (which cells to run), `studies` (the settings of the added studies), `cache` (one JSON file per
finished cell, keyed by a hash of its resolved config), `pool` (worker processes with one progress bar), `results`
(records, aggregates, results.csv), `verdicts` (the rule for each claim), `analysis` (the added studies' numbers),
`plots` and `plots_studies` (Matplotlib figures), `report` and `report_studies` (report.md).
"""
