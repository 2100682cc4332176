"""What bench knows about each metric, in one place: its display name, which direction is better, its unit, the
decimals it is shown with, the tolerance of the regression gate and whether the gate tracks it at all.

Read by the report tables (bench/report/tables.py) and their writers (LaTeX, CSV re-typesetting, layouts, plots), the
terminal summary of a run (bench/report/summary.py) and the regression gate (bench/report/gate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOLERANCE = 1.0  # the gate's tolerance of a tracked metric without its own ('*' in a baseline file)


@dataclass(frozen=True)
class MetricInfo:
    label: str
    better: int  # +1 higher is better, -1 lower is better, 0 no direction (not bolded, not tested)
    unit: str = "%"
    digits: int = 2
    #: absolute tolerance of the regression gate, in the metric's own units (percentage points for % metrics);
    #: None: the default ('*'). The smoke run is bit-exact run to run on one machine; these absorb float
    #: differences between CPUs, thread counts and library versions while a broken method (a scorer falling to
    #: chance moves AUROC by tens of points) still fails.
    tolerance: float | None = None
    #: True where the tolerance is a fraction of the baseline's magnitude, not an absolute amount: for a metric whose
    #: unit depends on the method (mean_confidence: a probability for msp, logit units for energy)
    relative: bool = False
    #: True where "better" does not hold whatever the error rate (AUPR-Error rises with the error rate, so a model
    #: that got worse can show a higher AUPR-Error): the gate then says "changed", not "better" or "worse"
    rate_dependent: bool = False
    #: False for wall-clock and memory figures: they vary from machine to machine and run to run, so the gate never
    #: tracks them (the micro-benchmarks in tests/benchmarks watch speed instead)
    tracked: bool = True


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("Acc", +1, tolerance=1.0),
    "auroc": MetricInfo("AUROC", +1, tolerance=2.0),
    "aupr_error": MetricInfo("AUPR-Err", +1, tolerance=3.0, rate_dependent=True),
    "aupr_success": MetricInfo("AUPR-Succ", +1, tolerance=1.0),
    "fpr95": MetricInfo("FPR95", -1, tolerance=5.0),
    "aurc": MetricInfo("AURC", -1, tolerance=1.0),
    "eaurc": MetricInfo("E-AURC", -1, tolerance=1.0),
    "augrc": MetricInfo("AUGRC", -1, tolerance=1.0),
    "risk_cov90": MetricInfo("risk@90%cov", -1, tolerance=1.0),
    "cov_risk1": MetricInfo("cov@1%risk", +1, tolerance=5.0),
    # split-conformal sets and SGR (bench/conformal.py): no direction (coverage should sit at its target, a smaller set
    # only counts where coverage holds, the risk should sit under SGR's target)
    **{f"cp_{s}_cov{lv}": MetricInfo(f"{s.upper()} cov{lv}", 0, tolerance=3.0)
       for s in ("lac", "aps", "raps") for lv in (90, 95)},
    **{f"cp_{s}_size{lv}": MetricInfo(f"{s.upper()} size{lv}", 0, "", 2, tolerance=0.3)
       for s in ("lac", "aps", "raps") for lv in (90, 95)},
    "sgr_risk": MetricInfo("SGR risk", 0, tolerance=1.0),
    "sgr_coverage": MetricInfo("SGR cov", 0, tolerance=5.0),
    "sgr_bound": MetricInfo("SGR bound", 0, tolerance=1.0),
    "ece": MetricInfo("ECE", -1, tolerance=1.5),
    "ece_adaptive": MetricInfo("AdaECE", -1, tolerance=1.5),
    "ece_classwise": MetricInfo("cwECE", -1, tolerance=0.5),
    "mce": MetricInfo("MCE", -1, tolerance=15.0),  # one sparse bin decides it: noisy by nature
    "brier_rel": MetricInfo("Brier rel", -1, "", 4, tolerance=0.01),
    "brier_res": MetricInfo("Brier res", +1, "", 4, tolerance=0.01),
    "brier_unc": MetricInfo("Brier unc", 0, "", 4, tolerance=0.01),
    "nll": MetricInfo("NLL", -1, "", 3, tolerance=0.05),
    "brier": MetricInfo("Brier", -1, "", 3, tolerance=0.02),
    "mean_confidence": MetricInfo("mean conf", 0, "", 3, tolerance=0.02, relative=True),  # 2% of the baseline
    "ood_auroc": MetricInfo("AUROC", +1, tolerance=2.0),
    "ood_aupr_in": MetricInfo("AUPR-In", +1, tolerance=3.0),
    "ood_aupr_out": MetricInfo("AUPR-Out", +1, tolerance=3.0),
    "ood_fpr95": MetricInfo("FPR95", -1, tolerance=5.0),
    "fooling_rate": MetricInfo("fooling", -1, tolerance=3.0),
    "uap_fooling_rate": MetricInfo("fooling", -1),
    "uap_train_fooling_rate": MetricInfo("train fooling", -1),
    "uap_norm": MetricInfo("UAP norm", 0, "", 3),
    "uap_passes": MetricInfo("UAP passes", 0, "", 0),
    "clean_accuracy": MetricInfo("clean Acc", +1),
    "removed_fraction": MetricInfo("removed", 0),
    "gen_seconds": MetricInfo("gen s", -1, "s", 1, tracked=False),
    "robust_accuracy": MetricInfo("robust Acc", +1, tolerance=2.0),
    "sec_per_epoch": MetricInfo("s/epoch", -1, "s", 2, tracked=False),
    "first_epoch_sec": MetricInfo("1st epoch s", -1, "s", 2, tracked=False),
    "train_sec_total": MetricInfo("train s", -1, "s", 1, tracked=False),
    "peak_cuda_mem_mb": MetricInfo("peak CUDA MiB", -1, "MiB", 0, tracked=False),
    "peak_rss_mb": MetricInfo("peak RSS MiB", -1, "MiB", 0, tracked=False),
    "infer_ms_per_1k": MetricInfo("ms/1k img", -1, "ms", 1, tracked=False),
    "params": MetricInfo("params", 0, "", 0, tolerance=0.0),
    "forward_passes": MetricInfo("passes", 0, "", 0, tolerance=0.0),
    "epochs": MetricInfo("epochs", 0, "", 0, tolerance=0.0),
    "best_epoch": MetricInfo("best epoch", 0, "", 0, tolerance=0.0),
    # how many images a cell scored and how many of them the classifier got wrong: the report states them under
    # each table (bench/report/counts.py); the gate leaves them to accuracy and the config's eval caps
    "n_images": MetricInfo("images", 0, "", 0, tracked=False),
    "n_errors": MetricInfo("errors", 0, "", 1, tracked=False),
}


def metric_info(metric: str) -> MetricInfo:
    """The facts of a metric; a metric bench does not list (a method's own extra) is shown under its name with two
    decimals, no unit and no direction, and is tracked unless its name says it is a time or a memory figure."""
    if metric in METRICS:
        return METRICS[metric]
    timing = metric.endswith(("_sec", "seconds", "_mb")) or "_ms_" in metric
    return MetricInfo(metric, 0, "", 2, tracked=not timing)


def default_tolerances() -> dict[str, float]:
    """The gate's tolerances: '*' for every tracked metric without its own, then each metric's own."""
    return {"*": DEFAULT_TOLERANCE, **{m: i.tolerance for m, i in METRICS.items() if i.tolerance is not None}}
