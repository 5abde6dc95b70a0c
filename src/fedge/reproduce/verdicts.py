"""Verdicts on the paper's three claims, each computed from the records by an explicit rule (stated in the report).

Noise: the seeds of a grid share nothing but the config, so for two settings compared seed by seed (same data split
and initial model) we take the per-seed difference; a mean difference no larger than its standard deviation across
seeds is called *within noise*. With one seed nothing is within noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedge.reproduce.results import Record, mean_sd, paired, select

HELD, WEAK, FAILED, UNTESTED = "held", "held only within noise", "did not hold", "not tested"


@dataclass
class Rules:
    delta: float = 0.2  # the δ claim (a) singles out
    balance_weight: float = 0.1  # w: 1 accuracy point is worth 1/w = 10% of the δ grid's largest traffic
    claimed_saving: float = 45.4  # claim (b), percent of DFL's traffic
    saving_tolerance: float = 5.0  # percentage points below the claim still counted as holding


@dataclass
class Verdict:
    claim: str
    title: str
    status: str
    text: str
    rule: str


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _within_noise(diffs: list[float]) -> bool:
    mean, sd = mean_sd(diffs)
    return len(diffs) > 1 and abs(mean) <= sd


def claim_a(records: list[Record], devices: int, rules: Rules) -> Verdict:
    """δ study: balance score S(δ) = accuracy in points − w · traffic in % of the grid's largest mean traffic."""
    w = rules.balance_weight
    rule = (f"For each δ, score S = accuracy (percentage points) − {w:g} × traffic (% of the largest mean traffic in "
            f"the δ grid), per seed. Held if δ = {rules.delta:g} has the highest mean S; held only within noise if "
            f"another δ is higher by no more than the seed-to-seed standard deviation of the paired gap; otherwise "
            f"not held.")
    title = f"(a) δ = {rules.delta:g} gives the best balance of accuracy and traffic"
    dpmn = select(records, study="delta", algorithm="dpmn", devices=devices)
    deltas = sorted({r.delta for r in dpmn})
    if len(deltas) < 2 or not any(abs(d - rules.delta) < 1e-9 for d in deltas):
        return Verdict("a", title, UNTESTED, f"The δ study needs DPMN at δ = {rules.delta:g} and at least one other "
                       f"δ; this run has δ ∈ {{{', '.join(f'{d:g}' for d in deltas)}}}.", rule)
    groups = {d: select(dpmn, delta=d) for d in deltas}
    reference = max(mean_sd(r.bytes_total for r in g)[0] for g in groups.values()) or 1.0

    def score(r: Record) -> float:
        return 100 * r.accuracy - w * 100 * r.bytes_total / reference

    stats = {d: (mean_sd(score(r) for r in g)[0], mean_sd(r.accuracy for r in g), mean_sd(r.mb for r in g))
             for d, g in groups.items()}
    claimed = next(d for d in deltas if abs(d - rules.delta) < 1e-9)
    best = max(deltas, key=lambda d: (stats[d][0], -abs(d - claimed)))
    lines = ", ".join(f"δ={d:g}: {_pct(stats[d][1][0])} at {stats[d][2][0]:.1f} MB (S={stats[d][0]:.1f})"
                      for d in deltas)
    most_accurate = max(deltas, key=lambda d: stats[d][1][0])
    cheapest = min(deltas, key=lambda d: stats[d][2][0])
    acc_of, mb_of = (lambda d: stats[d][1][0]), (lambda d: stats[d][2][0])
    dominated_by = [d for d in deltas if d != claimed and acc_of(d) >= acc_of(claimed) and mb_of(d) <= mb_of(claimed)
                    and (acc_of(d) > acc_of(claimed) or mb_of(d) < mb_of(claimed))]
    context = (f" Most accurate: δ = {most_accurate:g}; least traffic: δ = {cheapest:g}."
               + (f" δ = {claimed:g} is dominated (at least as accurate with no more traffic, better in one) by δ = "
                  f"{', '.join(f'{d:g}' for d in dominated_by)}." if dominated_by else
                  f" No other δ was both at least as accurate and cheaper than δ = {claimed:g}."))
    setting = f"DPMN, {devices} devices, {len(groups[claimed])} seed(s): {lines}."
    if best == claimed:
        ties = [d for d in deltas if d != claimed and stats[d][0] == stats[claimed][0]]
        tied = f" (tied with δ = {', '.join(f'{d:g}' for d in ties)})" if ties else ""
        return Verdict("a", title, HELD, f"δ = {claimed:g} had the highest balance score{tied}. {setting}{context}",
                       rule)
    gaps = [score(x) - score(y) for x, y in paired(groups[best], groups[claimed])]
    gap_mean, gap_sd = mean_sd(gaps)
    status = WEAK if _within_noise(gaps) else FAILED
    verb = "within noise of" if status == WEAK else "clearly above"
    return Verdict("a", title, status, f"δ = {best:g} scored highest, {gap_mean:.1f} ± {gap_sd:.1f} points "
                   f"({verb} δ = {claimed:g}). {setting}{context}", rule)


def claim_b(records: list[Record], rules: Rules) -> Verdict:
    """Traffic saving of DPMN against DFL at equal rounds, averaged over every setting where both ran."""
    low = rules.claimed_saving - rules.saving_tolerance
    rule = (f"Saving = 1 − MB(DPMN) / MB(DFL) after the same number of rounds, per seed and device count (DPMN at "
            f"δ = {rules.delta:g}), averaged. Held if the mean saving is at least {low:g}% (the claimed "
            f"{rules.claimed_saving:g}% less {rules.saving_tolerance:g} points); held only within noise if the mean "
            f"falls short but mean + standard deviation reaches {low:g}%.")
    title = f"(b) DPMN saves about {rules.claimed_saving:g}% of DFL's traffic at equal rounds"
    # the main setting and its device-count variants only (not the density, scarcity or skew sweeps' cells)
    paper = [r for r in records if {"main", "devices"} & set(r.studies)]
    dpmn = [r for r in paper if r.algorithm == "dpmn" and abs(r.delta - rules.delta) < 1e-9]
    dfl = [r for r in paper if r.algorithm == "dfl"]
    pairs, per_devices = [], {}
    for n in sorted({r.devices for r in dpmn} & {r.devices for r in dfl}):
        group = paired(_unique(select(dpmn, devices=n)), _unique(select(dfl, devices=n)))
        pairs += group
        per_devices[n] = group
    pairs = [(a, b) for a, b in pairs if b.bytes_total > 0]
    if not pairs:
        return Verdict("b", title, UNTESTED, "Needs DPMN and DFL runs with the same settings; this run has none.",
                       rule)
    savings = [100 * (1 - a.bytes_total / b.bytes_total) for a, b in pairs]
    acc_diff = [100 * (a.accuracy - b.accuracy) for a, b in pairs]
    mean, sd = mean_sd(savings)
    parts = "; ".join(f"{n} devices: {mean_sd(100 * (1 - a.bytes_total / b.bytes_total) for a, b in g)[0]:.1f}% "
                      f"({mean_sd(a.mb for a, _ in g)[0]:.1f} vs {mean_sd(b.mb for _, b in g)[0]:.1f} MB)"
                      for n, g in per_devices.items() if g)
    rounds = pairs[0][0].rounds
    status = HELD if mean >= low else (WEAK if mean + sd >= low else FAILED)
    comparison = ("more than" if mean > rules.claimed_saving + rules.saving_tolerance else
                  "close to" if mean >= low else "less than")
    accuracy = mean_sd(acc_diff)
    text = (f"DPMN sent {mean:.1f}% ± {sd:.1f}% less than DFL after {rounds} rounds, {comparison} the claimed "
            f"{rules.claimed_saving:g}% ({len(pairs)} paired runs; {parts}). At those equal rounds DPMN's accuracy "
            f"was {accuracy[0]:+.1f} ± {accuracy[1]:.1f} points relative to DFL's.")
    return Verdict("b", title, status, text, rule)


def claim_c(records: list[Record]) -> Verdict:
    """Similarity-based selection (DPMN) vs random selection (DPMN-R) at every device count of the scaling study."""
    rule = ("At each device count, the per-seed difference accuracy(DPMN) − accuracy(DPMN-R). Held if the mean "
            "difference is positive at every device count; held only within noise if it is positive everywhere but "
            "no larger than its standard deviation at some count; otherwise not held.")
    title = "(c) DPMN is more accurate than DPMN-R at every number of devices"
    study = select(records, study="devices")
    counts = sorted({r.devices for r in select(study, algorithm="dpmn")} & {r.devices for r in
                                                                         select(study, algorithm="dpmn-r")})
    if not counts:
        return Verdict("c", title, UNTESTED, "Needs DPMN and DPMN-R in the device-count study; this run has none.",
                       rule)
    rows, losing, noisy = [], [], []
    for n in counts:
        diffs = [100 * (a.accuracy - b.accuracy) for a, b in paired(select(study, algorithm="dpmn", devices=n),
                                                                      select(study, algorithm="dpmn-r", devices=n))]
        mean, sd = mean_sd(diffs)
        rows.append(f"{n} devices: {mean:+.1f} ± {sd:.1f} points")
        if mean <= 0:
            losing.append(n)
        if _within_noise(diffs):
            noisy.append(n)
    detail = "; ".join(rows)
    if losing:
        spread = [n for n in losing if n in noisy]
        note = (f" At {_counts(spread)} devices the shortfall is within the seed-to-seed spread, so more seeds could "
                f"change the outcome there." if spread else "")
        return Verdict("c", title, FAILED, f"DPMN was not more accurate than DPMN-R at "
                       f"{_counts(losing)} devices (DPMN − DPMN-R: {detail}).{note}", rule)
    if noisy:
        return Verdict("c", title, WEAK, f"DPMN was ahead on average at every device count, but by no more than the "
                       f"seed-to-seed spread at {_counts(noisy)} devices (DPMN − DPMN-R: {detail}).", rule)
    return Verdict("c", title, HELD, f"DPMN was more accurate than DPMN-R at every device count "
                   f"(DPMN − DPMN-R: {detail}).", rule)


def _counts(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


def _unique(records: list[Record]) -> list[Record]:
    seen: dict[str, Record] = {}
    for r in records:
        seen.setdefault(r.key or f"{r.algorithm}/{r.devices}/{r.delta}/{r.seed}", r)
    return list(seen.values())


def all_verdicts(records: list[Record], devices: int, rules: Rules) -> list[Verdict]:
    return [claim_a(records, devices, rules), claim_b(records, rules), claim_c(records)]


__all__ = ["FAILED", "HELD", "UNTESTED", "WEAK", "Rules", "Verdict", "all_verdicts", "claim_a", "claim_b", "claim_c"]
