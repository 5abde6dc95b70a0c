"""Claim verdicts come from the numbers: made-up results where each claim holds, fails, or holds only within noise,
and the report states the outcome with the numbers."""

from __future__ import annotations

from fedge.reproduce.report import RunInfo, render
from fedge.reproduce.results import Record, auto_target, select
from fedge.reproduce.verdicts import FAILED, HELD, UNTESTED, WEAK, Rules, all_verdicts, claim_a, claim_b, claim_c

N = 20


def rec(algorithm: str, accuracy: float, mb: float, seed: int = 0, devices: int = N, delta: float = 0.2,
        studies: tuple[str, ...] = ("main",)) -> Record:
    curve = [(1, accuracy / 2, mb * 5e5), (2, accuracy, mb * 1e6)]
    return Record(algorithm=algorithm, devices=devices, delta=delta, seed=seed, accuracy=accuracy,
                  bytes_total=mb * 1e6, studies=list(studies), rounds=2, accuracy_p10=accuracy - 0.1, curve=curve,
                  key=f"{algorithm}-{devices}-{delta}-{seed}")


def delta_records(table: dict[float, list[tuple[float, float]]]) -> list[Record]:
    """DPMN δ-study records: δ -> [(accuracy, MB) per seed]."""
    return [rec("dpmn", acc, mb, seed=s, delta=d, studies=("delta",)) for d, runs in table.items()
            for s, (acc, mb) in enumerate(runs)]


def test_claim_a_holds_when_delta_02_scores_best() -> None:
    records = delta_records({0.0: [(0.90, 100), (0.91, 100)], 0.2: [(0.90, 60), (0.91, 62)],
                             0.5: [(0.80, 40), (0.81, 40)]})
    verdict = claim_a(records, N, Rules())
    assert verdict.status == HELD
    assert "δ=0.2: 90.5%" in verdict.text


def test_claim_a_fails_when_another_delta_is_clearly_better() -> None:
    # δ = 0.4 is both more accurate and cheaper than δ = 0.2, consistently over seeds.
    records = delta_records({0.2: [(0.80, 100), (0.81, 100)], 0.4: [(0.90, 50), (0.91, 50)]})
    verdict = claim_a(records, N, Rules())
    assert verdict.status == FAILED
    assert "δ = 0.4 scored highest" in verdict.text
    assert "dominated" in verdict.text and "by δ = 0.4" in verdict.text


def test_claim_a_within_noise_and_weight_matters() -> None:
    # δ = 0.3 is a little better on average, but the seeds disagree: within noise.
    records = delta_records({0.2: [(0.90, 50), (0.80, 50)], 0.3: [(0.80, 50), (0.92, 50)]})
    assert claim_a(records, N, Rules()).status == WEAK
    # δ = 0 is more accurate but costs twice the traffic: with w = 0 accuracy alone decides, with w = 0.1 not.
    records = delta_records({0.0: [(0.93, 100), (0.93, 100)], 0.2: [(0.90, 50), (0.90, 50)]})
    assert claim_a(records, N, Rules(balance_weight=0.1)).status == HELD
    assert claim_a(records, N, Rules(balance_weight=0.0)).status == FAILED


def test_claim_a_untested_without_other_deltas() -> None:
    assert claim_a(delta_records({0.2: [(0.9, 50)]}), N, Rules()).status == UNTESTED


def test_claim_b_holds_or_fails_on_the_measured_saving() -> None:
    held = [rec("dpmn", 0.9, 52, seed=s) for s in (0, 1)] + [rec("dfl", 0.85, 100, seed=s) for s in (0, 1)]
    verdict = claim_b(held, Rules())
    assert verdict.status == HELD and "48.0% ± 0.0% less than DFL" in verdict.text
    failed = [rec("dpmn", 0.9, 80, seed=s) for s in (0, 1)] + [rec("dfl", 0.85, 100, seed=s) for s in (0, 1)]
    verdict = claim_b(failed, Rules())
    assert verdict.status == FAILED and "20.0%" in verdict.text and "less than the claimed 45.4%" in verdict.text
    # Averaged over device counts: 30% at one count and 50% at another -> 40% mean, short of 40.4% ...
    mixed = [rec("dpmn", 0.9, 70, devices=10), rec("dfl", 0.8, 100, devices=10),
             rec("dpmn", 0.9, 50, devices=20), rec("dfl", 0.8, 100, devices=20)]
    verdict = claim_b(mixed, Rules())
    assert verdict.status == WEAK and "10 devices: 30.0%" in verdict.text  # ... but within one sd of it
    assert claim_b([rec("dpmn", 0.9, 50)], Rules()).status == UNTESTED


def test_claim_c_fails_at_a_single_device_count() -> None:
    study = ("devices",)
    records = []
    for n, (a, r) in {10: (0.95, 0.90), 50: (0.70, 0.75), 100: (0.60, 0.55)}.items():
        for s in (0, 1):
            records += [rec("dpmn", a + 0.01 * s, 10, seed=s, devices=n, studies=study),
                        rec("dpmn-r", r + 0.01 * s, 10, seed=s, devices=n, studies=study)]
    verdict = claim_c(records)
    assert verdict.status == FAILED
    assert "at 50 devices" in verdict.text and "50 devices: -5.0 ± 0.0 points" in verdict.text
    # Make N = 50 favour DPMN as well: the claim holds.
    for r in records:
        if r.devices == 50 and r.algorithm == "dpmn":
            r.accuracy += 0.1
    assert claim_c(records).status == HELD


def test_claim_c_within_noise() -> None:
    study = ("devices",)
    records = [rec("dpmn", 0.90, 1, seed=0, devices=10, studies=study), rec("dpmn-r", 0.80, 1, seed=0, devices=10,
                                                                             studies=study),
               rec("dpmn", 0.80, 1, seed=1, devices=10, studies=study), rec("dpmn-r", 0.85, 1, seed=1, devices=10,
                                                                             studies=study)]
    verdict = claim_c(records)
    assert verdict.status == WEAK and "10 devices" in verdict.text


def test_report_says_when_claims_fail() -> None:
    """A made-up grid where all three claims fail: the report says so for each, with the numbers."""
    records = delta_records({0.2: [(0.70, 90), (0.71, 90)], 0.5: [(0.90, 40), (0.91, 40)]})
    for s in (0, 1):
        records += [rec("dpmn", 0.70, 90, seed=s, studies=("main", "devices")),
                    rec("dfl", 0.75, 100, seed=s, studies=("main", "devices")),
                    rec("dpmn-r", 0.78, 90, seed=s, studies=("main", "devices")),
                    rec("local", 0.72, 0, seed=s)]
    rules = Rules()
    verdicts = all_verdicts(records, N, rules)
    assert [v.status for v in verdicts] == [FAILED, FAILED, FAILED]
    info = RunInfo(command="fedge reproduce --made-up", machine="test", dataset="digits", model="lenet5", devices=N,
                   partition="shards:2", rounds=2, seeds=2, deltas=[0.2, 0.5], device_counts=[N], cells=10, cached=0,
                   wall_seconds=1.0)
    target = auto_target(select(records, study="main"))
    assert target == 0.66  # 95% of min(DPMN 70%, DFL 75%), rounded down
    text = render(info, records, verdicts, rules, target)
    assert "(a) δ = 0.2 gives the best balance of accuracy and traffic: DID NOT HOLD.** δ = 0.5 scored highest" in text
    assert "(b) DPMN saves about 45.4% of DFL's traffic at equal rounds: DID NOT HOLD.** DPMN sent 10.0%" in text
    assert "(c) DPMN is more accurate than DPMN-R at every number of devices: DID NOT HOLD" in text
    assert "20 devices: -8.0 ± 0.0 points" in text
    assert "| dpmn | 70.0 ± 0.0 | 60.0 ± 0.0 | 90.0 ± 0.0 | 90.0 ± 0.0 | 10.0 ± 0.0% |" in text
    assert "| local | 72.0 ± 0.0 |" in text and "HELD." not in text
