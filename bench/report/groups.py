"""Report groups: the tables a report is cut into (in-distribution, occlusion, adversarial, covariate shift, near and
far OOD, cost), their titles and default columns, and which group an eval set's rows belong to.

Each eval-set family declares its group on its registry entry (``EvalSetSpec.report_group``, datasets/); a report
looks it up by the set's name (for an OOD set, its near/far group when the run did not record it), so a report of an
old run builds no eval set. Rows of a set the registry does not know (a user's OOD folder, ``bench transfer`` and
``bench score`` rows) are grouped by their shift family.
"""

from __future__ import annotations

COST_SET = "cost"  # the pseudo eval set of a method's cost rows
MEAN_SET = "mean"  # pseudo eval set: per-unit mean over an OOD or covariate-shift group's sets

# Evaluation groups, in report order: key -> (title, default metrics).
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "id": ("In-distribution: accuracy, misclassification detection, calibration",
           ("accuracy", "auroc", "aupr_error", "aupr_success", "fpr95", "aurc", "eaurc", "ece", "nll", "brier")),
    "occlusion": ("Occlusion: accuracy and misclassification AUROC", ("accuracy", "auroc")),
    "adversarial": ("Adversarial: accuracy and misclassification AUROC", ("accuracy", "auroc", "uap_fooling_rate")),
    "ood-near": ("Near OOD detection (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "ood-far": ("Far OOD detection (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "ood": ("OOD detection, ungrouped (in-distribution test = positive)", ("ood_auroc", "ood_fpr95")),
    "shift": ("Covariate shift (MNIST-C corruptions): accuracy, misclassification detection, calibration",
              ("accuracy", "auroc", "aupr_error", "ece")),
    "cost": ("Cost (training on the run's device)",
             ("sec_per_epoch", "first_epoch_sec", "train_sec_total", "peak_cuda_mem_mb", "peak_rss_mb",
              "infer_ms_per_1k", "forward_passes", "params")),
}
OTHER_SHIFT_METRICS = ("accuracy", "auroc")

# Views: tables cut by metric across the groups above, built only when ``--groups`` names them (default reports stay
# as they were): key -> (title, default metrics, the groups whose eval sets they show; () = every group that has the
# metrics). The guarantee rows exist in runs made with ``--set eval.conformal=true`` (bench/conformal.py).
VIEWS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "failure": ("Failure prediction: misclassification detection and selective risk on the in-distribution test set",
                ("auroc", "augrc", "aurc", "risk_cov90", "fpr95"), ("id",)),
    "guarantees": ("Guarantees: split-conformal coverage and mean set size (LAC, APS, RAPS at alpha 0.1 and 0.05) "
                   "calibrated on each method's validation split; SGR's realised selective risk and coverage at "
                   "target risk 2%, delta 0.001",
                   (*(f"cp_{s}_{q}{lv}" for lv in (90, 95) for s in ("lac", "aps", "raps") for q in ("cov", "size")),
                    "sgr_risk", "sgr_coverage"), ()),
    "coverage": ("Guarantees under shift: split-conformal coverage at alpha 0.1 and SGR's realised selective risk "
                 "(target 2%), each family's mean over its sets",
                 ("cp_lac_cov90", "cp_aps_cov90", "cp_raps_cov90", "sgr_risk"), ()),
}
#: views whose columns are eval-set families (the part of a set's name before ':'), each the per-seed mean over the
#: family's sets, so one table shows every shift a run has (36 sets in the full leaderboard) in a page's width
FAMILY_VIEWS = ("coverage",)


def group_spec(key: str) -> tuple[str, tuple[str, ...]]:
    """(title, default metrics) of a group or view; a group of its own (a shift family no group claims) gets accuracy
    and misclassification AUROC."""
    if key in VIEWS:
        return VIEWS[key][:2]
    return GROUPS.get(key, (f"{key.capitalize()} shift: accuracy and misclassification AUROC", OTHER_SHIFT_METRICS))


def declared_group(name: str) -> str:
    """The report group the registry declares for an eval-set name (or family name); '' when it knows none."""
    from bench.datasets import evalsets
    from bench.errors import BenchError

    try:
        return evalsets.lookup(name)[0].report_group
    except (BenchError, KeyError, ValueError):  # unknown now (a user's set, a removed family) or bad parameters
        return ""


def report_group(eval_set: str, shift: str, ood_group: str = "") -> str:
    """The group of an eval set's rows. In-distribution ('none') and cost rows say it themselves, OOD rows by their
    near/far group (report/runs.py fills it from the run's manifest, else from the set's declared group); any other
    shift family's rows go where the family declares (looked up by the set's name, else by the shift's), else to a
    group of their own. So the registry (and the eval-set modules it imports) is loaded only for shifted sets."""
    if shift == COST_SET:
        return "cost"
    if shift in ("none", ""):
        return "id"
    if shift == "ood":
        return f"ood-{ood_group}" if ood_group in ("near", "far") else "ood"
    return declared_group(eval_set) or declared_group(shift) or shift


def row_groups(rows) -> list[str]:
    """The report group of each row of a tidy frame (columns eval_set, shift, group), looked up once per eval set."""
    memo: dict[tuple[str, str, str], str] = {}
    out = []
    for key in zip(rows["eval_set"], rows["shift"], rows["group"]):
        if key not in memo:
            memo[key] = report_group(*key)
        out.append(memo[key])
    return out
