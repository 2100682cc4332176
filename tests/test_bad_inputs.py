"""The bad-input catalogue: every command given input a user could plausibly type wrong. Each case must end with
its documented exit code (2 = bad usage, 1 = unreadable data), exactly one line on stderr naming the problem, and
no traceback, before any training. The cases run in this process (``bench.cli.main``), in a folder of prepared
files (``world``), so the whole catalogue takes seconds.

Placeholders in the arguments: {run} a finished (synthetic) run, {partial} one with a missing cell, {other} one of
another training recipe, {ckpt_run} a run whose checkpoint index points at a deleted checkpoint, {file} a plain
file, {dir} an empty folder, {foreign} a folder of someone's own files, {missing} a path that does not exist, and
the files named below in ``world``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from _runs import write_run
from _tiny import run_main
from bench.run.store import RunStore

RUN = ["run", "--profile", "smoke", "--device", "cpu", "--no-progress", "--out", "{dir}/new", "--cache-dir",
       "{dir}/cache"]
USAGE, DATA = 2, 1

# (arguments, exit code, text the one-line message must contain)
CASES: list[tuple[list[str], int, str]] = [
    # --- run: names -------------------------------------------------------------------------------------------------
    ([*RUN, "--methods", "mspp"], USAGE, "unknown method 'mspp'; did you mean msp"),
    ([*RUN, "--methods", "zz*"], USAGE, "no method matches 'zz*'"),
    ([*RUN, "--methods", ""], USAGE, "names no method"),
    ([*RUN, "--methods", ","], USAGE, "names no method"),
    ([*RUN, "--methods", "msp,nope"], USAGE, "unknown method 'nope'"),
    ([*RUN, "--backbone", "lenett"], USAGE, "unknown backbone 'lenett'"),
    ([*RUN, "--backbone", ""], USAGE, "unknown backbone ''"),
    ([*RUN, "--set", "backbone=resnet9000"], USAGE, "unknown backbone 'resnet9000'"),
    ([*RUN, "--datasets", "ood:fashon"], USAGE, "unknown eval set 'ood:fashon'"),
    ([*RUN, "--datasets", ""], USAGE, "names no eval set"),
    ([*RUN, "--datasets", " , "], USAGE, "names no eval set"),
    ([*RUN, "--datasets", "zz*"], USAGE, "no eval set matches 'zz*'"),
    # --- run: eval-set parameters, checked before training ----------------------------------------------------------
    ([*RUN, "--datasets", "fgsm:eps=abc"], USAGE, "eps='abc' is not a valid float"),
    ([*RUN, "--datasets", "mnist,fgsm:eps=abc"], USAGE, "eps='abc' is not a valid float"),
    ([*RUN, "--datasets", "fgsm:eps=0"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "fgsm:eps=-0.1"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "fgsm:eps=2"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "fgsm:eps=nan"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "fgsm:eps=inf"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "fgsm:epsilon=0.1"], USAGE, "bad parameter 'epsilon=0.1'"),
    ([*RUN, "--datasets", "fgsm:0.1"], USAGE, "bad parameter '0.1'"),
    ([*RUN, "--datasets", "fgsm:eps=0.1,fgsm:eps=0.10"], USAGE, "same set under two spellings"),
    ([*RUN, "--datasets", "pgd:eps=0.1,steps=0"], USAGE, "steps must be >= 1"),
    ([*RUN, "--datasets", "pgd:eps=0.1,steps=x"], USAGE, "steps='x' is not a valid int"),
    ([*RUN, "--datasets", "pgd:steps=5"], USAGE, "needs eps in (0, 1]"),
    ([*RUN, "--datasets", "pgd:eps=0.1,pgd:eps=0.1,steps=20"], USAGE, "same set under two spellings"),
    ([*RUN, "--datasets", "uap:xi=0"], USAGE, "xi=0 is outside (0, 1]"),
    ([*RUN, "--datasets", "uap:xi=abc"], USAGE, "xi='abc' is not a valid float"),
    ([*RUN, "--datasets", "uap:xi=0.2,p=3"], USAGE, "p in inf|2"),
    ([*RUN, "--datasets", "uap:xi=0.2,delta=1"], USAGE, "delta must be in (0, 1)"),
    ([*RUN, "--datasets", "uap:p=inf"], USAGE, "needs xi > 0"),
    ([*RUN, "--datasets", "fooling:n=0"], USAGE, "needs n >= 1"),
    ([*RUN, "--datasets", "fooling:eps=2"], USAGE, "eps in (0, 1]"),
    ([*RUN, "--datasets", "fooling:steps=x"], USAGE, "steps='x' is not a valid int"),
    ([*RUN, "--datasets", "occlusion:random-squares=2"], USAGE, "0 < F < 1"),
    ([*RUN, "--datasets", "occlusion:random-squares=x"], USAGE, "0 < F < 1"),
    ([*RUN, "--datasets", "occlusion:holes=0.3"], USAGE, "occlusion:holes=0.3 is malformed"),
    ([*RUN, "--datasets", "pmnist:sideways"], USAGE, "is not a PMNIST cut"),
    ([*RUN, "--datasets", "fgsm-transfer:eps=abc"], USAGE, "eps='abc' is not a valid float"),
    ([*RUN, "--datasets", "fgsm-transfer:eps=0.1,fgsm-transfer:eps=0.1,source=lenet"], USAGE, "two spellings"),
    ([*RUN, "--datasets", "dadc"], USAGE, "needs a run"),
    # --- run: seeds and folds ---------------------------------------------------------------------------------------
    ([*RUN, "--seeds", "0,x"], USAGE, "--seeds '0,x' is malformed"),
    ([*RUN, "--seeds", ""], USAGE, "--seeds is empty"),
    ([*RUN, "--seeds", ","], USAGE, "--seeds is empty"),
    ([*RUN, "--seeds", "0,0"], USAGE, "repeats a seed"),
    ([*RUN, "--seeds", "1.5"], USAGE, "is malformed"),
    ([*RUN, "--set", "seeds="], USAGE, "seeds is empty"),
    ([*RUN, "--set", "seeds=a"], USAGE, "seeds='a' is not a valid int"),
    ([*RUN, "--seeds", "-1"], USAGE, "seed -1 is out of range; seeds are integers from 0 to 4294967295"),
    ([*RUN, "--seeds", "0,4294967296"], USAGE, "seed 4294967296 is out of range"),
    ([*RUN, "--set", "seeds=1,1"], USAGE, "seeds [1, 1] repeat a seed"),
    ([*RUN, "--folds", "0"], USAGE, "folds must be >= 1"),
    ([*RUN, "--folds", "-3"], USAGE, "folds must be >= 1"),
    ([*RUN, "--folds", "70000"], USAGE, "more than the 60000 training images"),
    ([*RUN, "--folds", "x"], USAGE, "invalid int value: 'x'"),
    ([*RUN, "--set", "folds=1.5"], USAGE, "folds='1.5' is not a valid int"),
    # --- run: --set syntax and keys ---------------------------------------------------------------------------------
    ([*RUN, "--set", "train.epochs"], USAGE, "--set 'train.epochs' is malformed"),
    ([*RUN, "--set", "=5"], USAGE, "is malformed"),
    ([*RUN, "--set", "train.=5"], USAGE, "is malformed"),
    ([*RUN, "--set", "a.b.c=1"], USAGE, "keys have at most one dot"),
    ([*RUN, "--set", "bogus=1"], USAGE, "unknown config key 'bogus'"),
    ([*RUN, "--set", "train.epochz=3"], USAGE, "unknown key train.epochz"),
    ([*RUN, "--set", "split.maxtrain=3"], USAGE, "unknown key split.maxtrain"),
    ([*RUN, "--set", "eval.foo=1"], USAGE, "unknown key eval.foo"),
    ([*RUN, "--set", "mcdropout.bogus=1"], USAGE, "unknown key mcdropout.bogus"),
    ([*RUN, "--set", "mcdropout.passes=abc"], USAGE, "mcdropout.passes='abc' is not a valid int"),
    ([*RUN, "--set", "train=5"], USAGE, "train must be a mapping"),
    ([*RUN, "--set", "train=3", "--set", "train.epochs=2"], USAGE, "conflicts with an earlier --set"),
    # --- run: ranges ------------------------------------------------------------------------------------------------
    ([*RUN, "--set", "train.lr=fast"], USAGE, "train.lr='fast' is not a valid float"),
    ([*RUN, "--set", "train.lr=0"], USAGE, "train.lr must be > 0"),
    ([*RUN, "--set", "train.lr=-1"], USAGE, "train.lr must be > 0"),
    ([*RUN, "--set", "train.lr=nan"], USAGE, "train.lr must be > 0"),
    ([*RUN, "--set", "train.epochs=0"], USAGE, "train.epochs must be >= 1"),
    ([*RUN, "--set", "train.epochs=-2"], USAGE, "train.epochs must be >= 1"),
    ([*RUN, "--set", "train.epochs=1.5"], USAGE, "train.epochs='1.5' is not a valid int"),
    ([*RUN, "--set", "train.epochs=true"], USAGE, "is not a valid int"),
    ([*RUN, "--set", "train.batch_size=0"], USAGE, "train.batch_size must be >= 1"),
    ([*RUN, "--set", "train.val_every=0"], USAGE, "train.val_every must be >= 1"),
    ([*RUN, "--set", "train.optimizer=sgdd"], USAGE, "train.optimizer 'sgdd' is not one of"),
    ([*RUN, "--set", "train.scheduler=bogus"], USAGE, "train.scheduler 'bogus' is not one of"),
    ([*RUN, "--set", "train.momentum=1.5"], USAGE, "train.momentum must be in [0, 1)"),
    ([*RUN, "--set", "train.weight_decay=-1"], USAGE, "train.weight_decay must be >= 0"),
    ([*RUN, "--set", "train.grad_clip=-1"], USAGE, "train.grad_clip must be >= 0"),
    ([*RUN, "--set", "train.step_size=0"], USAGE, "train.step_size must be >= 1"),
    ([*RUN, "--set", "train.gamma=0"], USAGE, "train.gamma must be > 0"),
    ([*RUN, "--set", "split.max_train=-5"], USAGE, "split.max_train must be >= 0"),
    ([*RUN, "--set", "split.max_train=x"], USAGE, "split.max_train='x' is not a valid int"),
    ([*RUN, "--set", "split.val_fraction=0"], USAGE, "split.val_fraction must be in (0, 1)"),
    ([*RUN, "--set", "split.val_fraction=1"], USAGE, "split.val_fraction must be in (0, 1)"),
    ([*RUN, "--set", "split.val_fraction=-0.1"], USAGE, "split.val_fraction must be in (0, 1)"),
    ([*RUN, "--set", "split.val_fraction=abc"], USAGE, "is not a valid float"),
    ([*RUN, "--set", "eval.max_eval=-1"], USAGE, "eval.max_eval must be >= 0"),
    ([*RUN, "--set", "eval.max_attack=-1"], USAGE, "eval.max_attack must be >= 0"),
    ([*RUN, "--set", "eval.batch_size=0"], USAGE, "eval.batch_size must be >= 1"),
    ([*RUN, "--set", "eval.cost_images=0"], USAGE, "eval.cost_images must be >= 1"),
    ([*RUN, "--set", "eval.cost_images=-5"], USAGE, "eval.cost_images must be >= 1"),
    # --- run: options must be finite (issue 35 item 1): nan passes no bound, inf passes every lower one -------------
    ([*RUN, "--set", "odin.temperature=inf"], USAGE, "odin.temperature must be > 0 and finite, got inf"),
    ([*RUN, "--set", "odin.temperature=nan"], USAGE, "odin.temperature must be > 0, got nan"),
    ([*RUN, "--set", "odin.eps=1e6"], USAGE, "odin.eps must be in [0, 1], got 1000000.0"),
    ([*RUN, "--set", "train.lr=inf"], USAGE, "train.lr must be > 0 and finite, got inf"),
    ([*RUN, "--set", "energy.temperature=inf"], USAGE, "energy.temperature must be > 0 and finite"),
    ([*RUN, "--set", "trustgan.weight_decay=inf"], USAGE, "trustgan.weight_decay must be >= 0 and finite"),
    ([*RUN, "--set", "pnorm.p=nan"], USAGE, "pnorm.p must be -1.0 or inf or >= 0, got nan"),
    ([*RUN, "--set", "cure.h=0.1,nan"], USAGE, "cure.h must be one or more positive numbers"),
    ([*RUN, "--set", "cure.h=inf"], USAGE, "cure.h must be one or more positive numbers"),
    ([*RUN, "--set", "executor.cpus_per_unit=inf"], USAGE, "must be >= 0 and finite"),
    # --- run: a parameter given twice (the later would win silently) ------------------------------------------------
    ([*RUN, "--datasets", "fgsm:eot=2,eot=3"], USAGE, "fgsm:eot=2,eot=3: parameter eot is given twice"),
    ([*RUN, "--datasets", "pgd:eps=0.1,eps=0.2"], USAGE, "parameter eps is given twice"),
    ([*RUN, "--datasets", "uap:xi=0.2,xi=0.3"], USAGE, "parameter xi is given twice"),
    # --- run: code you name that exits or raises: one line naming the file ------------------------------------------
    ([*RUN, "--model", "{exit_py}:Net"], USAGE, "{exit_py} fails to import (it calls sys.exit(3))"),
    ([*RUN, "--model", "{raise_py}:Net"], USAGE, "{raise_py} fails to import (RuntimeError: no GPU here)"),
    ([*RUN, "--model", "{ctor_exit_py}:Net"], USAGE, "Net() in {ctor_exit_py} fails (it calls sys.exit(3))"),
    ([*RUN, "--model", "{meta_py}:Net"], USAGE, "has tensors on the meta device (1.weight"),
    ([*RUN, "--model", "{complex_py}:Net"], USAGE, "returns torch.complex64 logits; it must return real numbers"),
    # --- run: --data ------------------------------------------------------------------------------------------------
    ([*RUN, "--data", "d={empty_class}"], USAGE, "c is a class folder without image files"),
    ([*RUN, "--data", "big={big_images}"], USAGE, "images of 3000x3000 pixels (W x H) are larger than bench reads"),
    ([*RUN, "--data", "big={big_npz}"], USAGE, "images of 3000x3000 pixels (W x H) are larger than bench reads"),
    # --- run: executor and device -----------------------------------------------------------------------------------
    ([*RUN, "--set", "executor.kind=slurm"], USAGE, "executor.kind='slurm' is not valid"),
    ([*RUN, "--set", "executor.jobs=-1"], USAGE, "executor.jobs must be >= 1, or 0 for auto"),
    ([*RUN, "--jobs", "-2"], USAGE, "executor.jobs must be >= 1, or 0 for auto"),
    ([*RUN, "--jobs", "x"], USAGE, "invalid --jobs value: 'x'; give a number or auto"),
    ([*RUN, "--ray-address", "head:6379"], USAGE, "--ray-address needs --executor ray"),
    ([*RUN, "--set", "executor.max_retries=-1"], USAGE, "must be >= 0"),
    ([*RUN, "--set", "executor.cpus_per_unit=-1"], USAGE, "must be >= 0"),
    ([*RUN, "--executor", "slurm"], USAGE, "invalid choice: 'slurm'"),
    ([*RUN, "--device", "tpu"], USAGE, "--device 'tpu' is not valid"),
    ([*RUN, "--device", ""], USAGE, "--device '' is not valid"),
    ([*RUN, "--set", "device=gpu"], USAGE, "--device 'gpu' is not valid"),
    # --- run: profile and config files ------------------------------------------------------------------------------
    ([*RUN, "--profile", "huge"], USAGE, "unknown profile 'huge'"),
    ([*RUN, "--profile", ""], USAGE, "unknown profile ''"),
    ([*RUN, "--config", "{missing}"], USAGE, "does not exist"),
    ([*RUN, "--config", "{dir}"], USAGE, "is a folder; give a YAML file"),
    ([*RUN, "--config", "{yaml_syntax}"], USAGE, "at line 4, column 1"),
    ([*RUN, "--config", "{yaml_tab}"], USAGE, "does not parse as YAML at line"),
    ([*RUN, "--config", "{yaml_list}"], USAGE, "must be a mapping of keys to values, got list"),
    ([*RUN, "--config", "{yaml_scalar}"], USAGE, "must be a mapping of keys to values, got str"),
    ([*RUN, "--config", "{yaml_unknown}"], USAGE, "unknown key train.epochz"),
    ([*RUN, "--config", "{yaml_section}"], USAGE, "train must be a mapping of options"),
    ([*RUN, "--config", "{yaml_type}"], USAGE, "train.epochs='abc' is not a valid int"),
    ([*RUN, "--config", "{yaml_negative}"], USAGE, "split.max_train must be >= 0"),
    ([*RUN, "--config", "{binary}"], USAGE, "does not parse as YAML"),
    ([*RUN, "--config", "{yaml_empty_methods}"], USAGE, "methods is empty"),
    # --- run: user OOD sets -----------------------------------------------------------------------------------------
    ([*RUN, "--ood", "notmnist"], USAGE, "--ood 'notmnist' is malformed"),
    ([*RUN, "--ood", "=x"], USAGE, "is malformed"),
    ([*RUN, "--ood", "a b={dir}"], USAGE, "is malformed"),
    ([*RUN, "--ood", "mine={missing}"], USAGE, "does not exist"),
    ([*RUN, "--ood", "fashion={dir}"], USAGE, "is a built-in eval set"),
    # --- run: output folder -----------------------------------------------------------------------------------------
    ([*RUN, "--out", "{file}"], USAGE, "cannot write to --out"),
    ([*RUN, "--out", "{file}/run"], USAGE, "cannot write to --out"),
    ([*RUN, "--out", "{foreign}"], USAGE, "is a folder that is not a bench run (it holds results.csv)"),
    ([*RUN, "--out", "{foreign_manifest}"], USAGE, "is a folder that is not a bench run (it holds manifest.json)"),
    ([*RUN, "--out", "{run}"], USAGE, "already holds results; continue it with --resume"),
    ([*RUN, "--cache-dir", "{file}/cache"], USAGE, "cannot write to --cache-dir"),
    ([*RUN, "--cache-dir", "{file}"], USAGE, "cannot write to --cache-dir"),
    (["run", "--resume"], USAGE, "--resume: no run to resume in results/runs"),
    (["run", "--resume", "--out", "{run}", "--methods", "msp"], USAGE, "cannot resume {run} with a different config"),
    (["run", "--resume", "--out", "{run}"], USAGE, "unknown method 'alpha'"),
    ([*RUN, "--frobnicate"], USAGE, "unrecognized arguments: --frobnicate"),
    (["run", "--folds"], USAGE, "expected one argument"),
    # --- list and top level -----------------------------------------------------------------------------------------
    (["list", "bogus"], USAGE, "invalid choice: 'bogus'"),
    (["list", "methods", "zz*"], USAGE, "no methods match"),
    (["list", "datasets", "zz*"], USAGE, "no datasets match"),
    (["frobnicate"], USAGE, "invalid choice: 'frobnicate'"),
    # --- report -----------------------------------------------------------------------------------------------------
    (["report"], USAGE, "the following arguments are required: RUN"),
    (["report", "{missing}"], USAGE, "does not exist"),
    (["report", "{file}"], USAGE, "is a file, not a run directory"),
    (["report", "{dir}"], USAGE, "is not a run directory (no manifest.json)"),
    (["report", "{no_cells}"], USAGE, "has no finished cells"),
    (["report", "{partial}"], USAGE, "is partial"),
    (["report", "{corrupt_manifest}"], USAGE, "is corrupt (not JSON)"),
    (["report", "{corrupt_cell}"], USAGE, "is corrupt (not JSON)"),
    (["report", "{malformed_cell}"], USAGE, "is malformed"),
    (["report", "{run}", "{run}"], USAGE, "is given twice"),
    (["report", "{run}", "{other}"], USAGE, "are incompatible"),
    (["report", "{run}", "--alpha", "0"], USAGE, "--alpha 0.0 must lie in (0, 1)"),
    (["report", "{run}", "--alpha", "1.5"], USAGE, "must lie in (0, 1)"),
    (["report", "{run}", "--alpha", "x"], USAGE, "invalid float value: 'x'"),
    (["report", "{run}", "--format", "pdf"], USAGE, "invalid choice: 'pdf'"),
    (["report", "{run}", "--metrics", ""], USAGE, "an empty list was given"),
    (["report", "{run}", "--methods", ","], USAGE, "an empty list was given"),
    (["report", "{run}", "--groups", ""], USAGE, "an empty list was given"),
    (["report", "{run}", "--methods", "nope"], USAGE, "nope"),
    (["report", "{run}", "--groups", "nope"], USAGE, "nope"),
    (["report", "{run}", "--metrics", "nope"], USAGE, "nope"),
    (["report", "{run}", "--out", "{file}/r.md"], USAGE, "cannot write to --out"),
    (["report", "{run}", "--out", "{dir}"], USAGE, "cannot tell the format"),
    (["report", "{run}", "--out", "{dir}", "--format", "md"], USAGE, "is a folder; give a file name"),
    (["report", "{run}", "--out", "r.xyz"], USAGE, "cannot tell the format of an --out file ending in '.xyz'"),
    (["report", "{run}", "--plots", "{file}/plots"], USAGE, "cannot write to --plots"),
    (["report", "{run}", "--plots", "{file}"], USAGE, "cannot write to --plots"),
    (["report", "{run}", "--frobnicate"], USAGE, "unrecognized arguments"),
    (["report", "{csv_word}"], USAGE, "line 2: mean='high' is not a number"),
    (["report", "{csv_short}"], USAGE, "line 3 has 4 cells, not 13"),
    (["report", "{csv_long}"], USAGE, "line 2 has 14 cells, not 13"),
    (["report", "{csv_latin1}"], USAGE, "is not UTF-8 text"),
    # --- gallery and uap-sweep --------------------------------------------------------------------------------------
    (["gallery", "{run}", "--targeted-eps", "nan"], USAGE, "--targeted-eps nan must be in [0, 1]"),
    (["gallery", "{run}", "--targeted-eps", "inf"], USAGE, "--targeted-eps inf must be in [0, 1]"),
    (["gallery", "{garbage_predictions}", "--sections", "samples", "--out", "{dir}/g"], USAGE,
     "is not a predictions file bench wrote"),
    (["uap-sweep", "--linf", "0.1,0.1"], USAGE, "--linf '0.1,0.1' repeats a radius (0.1)"),
    (["uap-sweep", "--linf", "", "--l2", "1,1.0,2"], USAGE, "repeats a radius (1)"),
    # --- compare ----------------------------------------------------------------------------------------------------
    (["compare", "{run}"], USAGE, "the following arguments are required: --baseline"),
    (["compare", "{run}", "--baseline", "{missing}"], USAGE, "does not exist; make one with"),
    (["compare", "{run}", "--baseline", "{dir}"], USAGE, "does not exist; make one with"),
    (["compare", "{run}", "--baseline", "{file}"], USAGE, "is not valid JSON"),
    (["compare", "{run}", "--baseline", "{binary}"], USAGE, "is not valid JSON"),
    (["compare", "{run}", "--baseline", "{base_kind}"], USAGE, "is not a bench baseline"),
    (["compare", "{run}", "--baseline", "{base_list}"], USAGE, "is not a bench baseline"),
    (["compare", "{run}", "--baseline", "{base_schema}"], USAGE, "has schema 0"),
    (["compare", "{run}", "--baseline", "{base_metrics}"], USAGE, "malformed \"metrics\" list"),
    (["compare", "{run}", "--baseline", "{base_string}"], USAGE, "has value 'ninety', not a number"),
    (["compare", "{run}", "--baseline", "{base_bool}"], USAGE, "has value True, not a number"),
    (["compare", "{run}", "--baseline", "{base_name}"], USAGE, "not a number"),
    (["compare", "{run}", "--baseline", "{base_tol_string}"], USAGE, "tolerance auroc='wide' is not a number"),
    (["compare", "{run}", "--baseline", "{base_tol_negative}"], USAGE, "tolerance auroc=-1 is not a number >= 0"),
    (["compare", "{run}", "--baseline", "{base_tolerances}"], USAGE, "malformed \"tolerances\""),
    (["compare", "{run}", "--baseline", "{base_config}"], USAGE, "malformed \"config\""),
    (["compare", "{run}", "--baseline", "{base_other}"], USAGE, "differs from the baseline's"),
    (["compare", "{run}", "--baseline", "{baseline}", "--tolerance", "auroc"], USAGE, "is malformed"),
    (["compare", "{run}", "--baseline", "{baseline}", "--tolerance", "auroc=x"], USAGE, "is malformed"),
    (["compare", "{run}", "--baseline", "{baseline}", "--tolerance", "auroc=-1"], USAGE, "is malformed"),
    (["compare", "{run}", "--baseline", "{baseline}", "--tolerance", "aurocc=1"], USAGE, "unknown metric"),
    (["compare", "{run}", "--baseline", "{file}/b.json", "--update"], USAGE, "cannot write --baseline"),
    (["compare", "{run}", "--baseline", "{dir}", "--update"], USAGE, "cannot write --baseline"),
    (["compare", "{missing}", "--baseline", "{baseline}"], USAGE, "does not exist"),
    (["compare", "{partial}", "--baseline", "{baseline}"], USAGE, "is partial"),
    (["compare", "{run}", "{run}", "--baseline", "{baseline}"], USAGE, "unrecognized arguments"),
    # --- predict ----------------------------------------------------------------------------------------------------
    (["predict", "--run", "{run}", "--method", "msp"], USAGE, "the following arguments are required: images"),
    (["predict", "{png}", "--method", "msp"], USAGE, "the following arguments are required: --run"),
    (["predict", "{missing}", "--run", "{run}", "--method", "msp"], DATA, "does not exist"),
    (["predict", "{fake_png}", "--run", "{run}", "--method", "msp"], DATA, "is not a readable image"),
    (["predict", "{file}", "--run", "{run}", "--method", "msp"], DATA, "is neither a folder of images"),
    (["predict", "{dir}", "--run", "{run}", "--method", "msp"], DATA, "has no image files"),
    (["predict", "{bad_npz}", "--run", "{run}", "--method", "msp"], DATA, "is not a readable .npz"),
    (["predict", "{npz_keys}", "--run", "{run}", "--method", "msp"], DATA, "no array named 'images' or 'x'"),
    (["predict", "{npz_range}", "--run", "{run}", "--method", "msp"], DATA, "float images must lie in [0, 1]"),
    (["predict", "{npz_nan}", "--run", "{run}", "--method", "msp"], DATA, "float images must lie in [0, 1]"),
    (["predict", "{npz_int}", "--run", "{run}", "--method", "msp"], DATA, "must be uint8 or float"),
    (["predict", "{npz_chw}", "--run", "{run}", "--method", "msp"], DATA, "is ambiguous"),
    (["predict", "{npz_5d}", "--run", "{run}", "--method", "msp"], DATA, "expected images shaped"),
    (["predict", "{npz_empty}", "--run", "{run}", "--method", "msp"], DATA, "holds no images"),
    (["predict", "{idx_bad}", "--run", "{run}", "--method", "msp"], DATA, "{idx_bad}"),
    (["predict", "{png}", "--run", "{missing}", "--method", "msp"], USAGE, "manifest.json is missing"),
    (["predict", "{png}", "--run", "{dir}", "--method", "msp"], USAGE, "manifest.json is missing"),
    (["predict", "{png}", "--run", "{run}", "--method", "msp"], USAGE, "checkpoints.json is missing"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "energy"], USAGE, "has no fitted energy"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp", "--seed", "7"], USAGE, "has no fitted msp seed 7"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp"], USAGE, "restore it with: python -m bench run "
                                                                           "--resume --out"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp", "--device", "tpu"], USAGE, "is not valid"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp", "--csv", "{file}/p.csv"], USAGE,
     "cannot write to --csv"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp", "--csv", "{dir}"], USAGE, "is a folder"),
    (["predict", "{png}", "--run", "{ckpt_run}", "--method", "msp", "--fold", "x"], USAGE, "invalid int value"),
    # --- transfer ---------------------------------------------------------------------------------------------------
    (["transfer", "--eps", "abc"], USAGE, "--eps 'abc' is malformed"),
    (["transfer", "--eps", "0"], USAGE, "give radii in (0, 1]"),
    (["transfer", "--eps", "2"], USAGE, "give radii in (0, 1]"),
    (["transfer", "--eps", ""], USAGE, "give radii in (0, 1]"),
    (["transfer", "--eps", "0.1,0.1"], USAGE, "repeats a radius"),
    (["transfer", "--eps", "nan"], USAGE, "give radii in (0, 1]"),
    (["transfer", "--inits", "0"], USAGE, "--inits must be >= 1"),
    (["transfer", "--inits", "x"], USAGE, "invalid int value"),
    (["transfer", "--backbones", "nope"], USAGE, "unknown backbone 'nope'"),
    (["transfer", "--backbones", ""], USAGE, "names no backbone"),
    (["transfer", "--backbones", "lenet,lenet"], USAGE, "repeats a backbone"),
    (["transfer", "--attack", "cw"], USAGE, "invalid choice: 'cw'"),
    (["transfer", "--profile", "huge"], USAGE, "unknown profile 'huge'"),
    (["transfer", "--set", "train.lr=x"], USAGE, "is not a valid float"),
    (["transfer", "--set", "split.max_train=-1"], USAGE, "split.max_train must be >= 0"),
    (["transfer", "--set", "eval.max_eval=-1"], USAGE, "eval.max_eval must be >= 0"),
    (["transfer", "--set", "bogus=1"], USAGE, "unknown config key 'bogus'"),
    (["transfer", "--device", "tpu"], USAGE, "is not valid"),
    (["transfer", "--out", "{run}", "--cache-dir", "{dir}/c"], USAGE, "already holds results"),
    (["transfer", "--out", "{foreign}", "--cache-dir", "{dir}/c"], USAGE, "not a bench run"),
    (["transfer", "--out", "{file}/t", "--cache-dir", "{dir}/c"], USAGE, "cannot write to --out"),
    (["transfer", "--cache-dir", "{file}/c"], USAGE, "cannot write to --cache-dir"),
    # --- serve ------------------------------------------------------------------------------------------------------
    (["serve"], USAGE, "the following arguments are required: --run"),
    (["serve", "--run", "{run}", "--port", "0"], USAGE, "--port 0 is not a port number"),
    (["serve", "--run", "{run}", "--port", "70000"], USAGE, "--port 70000 is not a port number"),
    (["serve", "--run", "{run}", "--port", "x"], USAGE, "invalid int value"),
    (["serve", "--run", "{missing}"], USAGE, "is not a directory"),
    (["serve", "--run", "{file}"], USAGE, "is not a directory"),
    (["serve", "--run", "{run}", "--round", "x"], USAGE, "--round 'x' is not latest"),
    (["serve", "--run", "{run}", "--round", "-1"], USAGE, "--round '-1' is not latest"),
    # --- dadc -------------------------------------------------------------------------------------------------------
    (["dadc"], USAGE, "the following arguments are required: dadc_command"),
    (["dadc", "bogus"], USAGE, "invalid choice: 'bogus'"),
    (["dadc", "retrain", "--run", "{run}"], USAGE, "the following arguments are required: --method"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--epochs", "0"], USAGE, "--epochs must be >= 1"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--epochs", "-1"], USAGE, "--epochs must be >= 1"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--epochs", "x"], USAGE, "invalid int value"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--human-fraction", "0"], USAGE, "must be in (0, 1)"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--human-fraction", "1"], USAGE, "must be in (0, 1)"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--human-fraction", "x"], USAGE, "invalid float"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--lr", "0"], USAGE, "--lr must be > 0"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--lr", "-0.1"], USAGE, "--lr must be > 0"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp", "--device", "tpu"], USAGE, "is not valid"),
    (["dadc", "retrain", "--run", "{missing}", "--method", "msp"], USAGE, "manifest.json is missing"),
    (["dadc", "retrain", "--run", "{run}", "--method", "msp"], USAGE, "checkpoints.json is missing"),
    (["dadc", "retrain", "--run", "{ckpt_run}", "--method", "energy"], USAGE, "has no fitted energy"),
    (["dadc", "rounds", "--run", "{missing}"], USAGE, "checkpoints.json is missing"),
    (["dadc", "rounds", "--run", "{run}", "--max-eval", "-1"], USAGE, "--max-eval must be >= 0"),
    (["dadc", "rounds", "--run", "{run}", "--device", "tpu"], USAGE, "is not valid"),
]


def _yaml(root, name: str, text: str) -> None:
    (root / name).write_text(text)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of prepared inputs, named by the placeholders of ``CASES``."""
    root = tmp_path_factory.mktemp("world")
    paths = {"missing": root / "missing", "dir": root / "empty", "file": root / "file.txt"}
    paths["dir"].mkdir()
    paths["file"].write_text("just text\n")
    paths["run"] = write_run(root, "run-a")
    paths["other"] = write_run(root, "run-b", epochs=2)
    paths["partial"] = write_run(root, "run-p", skip=("alpha__seed0__fold0__mnist",))
    for name in ("no_cells", "corrupt_manifest", "corrupt_cell", "malformed_cell", "ckpt_run"):
        paths[name] = root / name
        shutil.copytree(paths["run"], paths[name])
    shutil.rmtree(paths["no_cells"] / "cells")
    (paths["corrupt_manifest"] / "manifest.json").write_text("{not json")
    cell = sorted((paths["corrupt_cell"] / "cells").glob("*.json"))[0]
    cell.write_text('[{"run_id": ')
    cell = sorted((paths["malformed_cell"] / "cells").glob("*.json"))[0]
    cell.write_text('{"rows": []}')
    store = RunStore(paths["ckpt_run"])
    store.record_fitted("msp", 0, 0, "msp-0000", root / "cache" / "msp-0000.pt")  # never written: "deleted"
    store.rebuild_indices()  # checkpoints.json, as the runner writes it
    paths["foreign"] = root / "foreign"
    paths["foreign"].mkdir()
    (paths["foreign"] / "results.csv").write_text("mine\n")
    paths["foreign_manifest"] = root / "foreign_manifest"
    paths["foreign_manifest"].mkdir()
    (paths["foreign_manifest"] / "manifest.json").write_text('{"author": "me"}')
    paths["binary"] = root / "binary.bin"
    paths["binary"].write_bytes(b"\xff\xfe\x00\x81" * 10)
    yamls = {"yaml_syntax": "train:\n  epochs: 3\n  lr: [1,\n", "yaml_tab": "train:\n\tepochs: 3\n",
             "yaml_list": "- a\n- b\n", "yaml_scalar": "hello\n", "yaml_unknown": "train:\n  epochz: 3\n",
             "yaml_section": "train: 5\n", "yaml_type": "train: {epochs: abc}\n",
             "yaml_negative": "split: {max_train: -10}\n", "yaml_empty_methods": "methods: []\n"}
    for name, text in yamls.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text)
    # images
    from PIL import Image

    paths["png"] = root / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(paths["png"])
    paths["fake_png"] = root / "fake.png"
    paths["fake_png"].write_text("not a png")
    npz = {"npz_keys": {"a": np.zeros((1, 28, 28)), "b": np.zeros((1, 28, 28))},
           "npz_range": {"images": np.full((2, 28, 28), 3.0)},
           "npz_nan": {"images": np.full((2, 28, 28), np.nan)},
           "npz_int": {"images": np.zeros((2, 28, 28), np.int64)},
           "npz_chw": {"images": np.zeros((3, 28, 28), np.uint8)},
           "npz_5d": {"images": np.zeros((1, 1, 1, 28, 28), np.uint8)},
           "npz_empty": {"images": np.zeros((0, 28, 28), np.uint8)}}
    for name, arrays in npz.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], **arrays)
    paths["bad_npz"] = root / "bad.npz"
    paths["bad_npz"].write_bytes(b"PK\x03\x04 broken zip")
    paths["idx_bad"] = root / "images.idx"
    paths["idx_bad"].write_bytes(b"\x00\x00\x08\x09" + b"\x00" * 3)
    _issue35_item1_files(root, paths)
    # baselines
    base = root / "baseline.json"
    code, _, err = run_main(["compare", str(paths["run"]), "--baseline", str(base), "--update"])
    assert code == 0, err
    paths["baseline"] = base
    good = json.loads(base.read_text())

    def variant(name: str, change) -> None:
        data = json.loads(json.dumps(good))
        data = change(data) or data
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(data))

    variant("base_kind", lambda d: d.pop("kind"))
    variant("base_list", lambda d: [1, 2])
    variant("base_schema", lambda d: d.update(schema=0))
    variant("base_metrics", lambda d: d.update(metrics=[{"method": "alpha"}]))
    variant("base_string", lambda d: d["metrics"][0].update(value="ninety"))
    variant("base_bool", lambda d: d["metrics"][0].update(value=True))
    variant("base_name", lambda d: d["metrics"][0].update(method=3, value="x"))
    variant("base_tol_string", lambda d: d["tolerances"].update(auroc="wide"))
    variant("base_tol_negative", lambda d: d["tolerances"].update(auroc=-1))
    variant("base_tolerances", lambda d: d.update(tolerances=[1]))
    variant("base_config", lambda d: d.update(config="smoke"))
    variant("base_other", lambda d: d["config"].update(backbone="mlp"))
    return root, {k: str(v) for k, v in paths.items()}


def _issue35_item1_files(root, paths: dict) -> None:
    """Inputs of issue 35 item 1's cases: code that exits or raises, models on the meta device or with complex
    outputs, an empty class folder, images too large, report CSVs that are not what bench writes, a run whose
    predictions file is garbage."""
    import io
    import struct
    import zlib

    from bench.report.export import CSV_FIELDS

    net = "from torch import nn\nclass Net(nn.Sequential):\n    def __init__(self):\n        super().__init__({})\n"
    code = {"exit_py": "import sys\nsys.exit(3)\n", "raise_py": "raise RuntimeError('no GPU here')\n",
            "ctor_exit_py": "import sys\nfrom torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n"
                            "        sys.exit(3)\n",
            "meta_py": net.format("nn.Flatten(), nn.Linear(784, 10, device='meta')"),
            "complex_py": "import torch\nfrom torch import nn\nclass Net(nn.Module):\n    def forward(self, x):\n"
                          "        return torch.zeros(len(x), 10, dtype=torch.complex64)\n"}
    for name, text in code.items():
        paths[name] = root / f"{name}.py"
        paths[name].write_text(text)
    from PIL import Image

    paths["empty_class"] = root / "classes"
    for c in ("a", "b", "c"):  # c, the last class, is an empty folder
        (paths["empty_class"] / c).mkdir(parents=True)
    for c in ("a", "b"):
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(paths["empty_class"] / c / f"{i}.png")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    paths["big_images"] = root / "big"
    for c in ("a", "b"):  # a PNG header declaring 3000 x 3000 grey pixels: the size is known before any decoding
        (paths["big_images"] / c).mkdir(parents=True)
        (paths["big_images"] / c / "0.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3000, 3000, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (2, 3000, 3000)})
    paths["big_npz"] = root / "big.npz"
    import zipfile

    with zipfile.ZipFile(paths["big_npz"], "w") as z:  # headers only: reading the arrays would fail
        z.writestr("images.npy", header.getvalue())
        z.writestr("labels.npy", header.getvalue())
    head = ",".join(CSV_FIELDS) + "\n"
    good = "id,mnist,accuracy,alpha,3,91.0,1.0,,,1,1,,1\n"
    csvs = {"csv_word": head + good.replace("91.0", "high"), "csv_short": head + good + "id,mnist,auroc,alpha\n",
            "csv_long": head + good.replace("\n", ",9\n")}
    for name, text in csvs.items():
        paths[name] = root / f"{name}.csv"
        paths[name].write_text(text)
    paths["csv_latin1"] = root / "csv_latin1.csv"
    paths["csv_latin1"].write_bytes((head + good.replace("alpha", "\u00e9t\u00e9")).encode("latin-1"))
    paths["garbage_predictions"] = write_run(root, "run-g", methods=("alpha",), seeds=(0,), predictions=True)
    for f in (paths["garbage_predictions"] / "predictions").glob("*.npz"):
        f.write_bytes(b"not an npz at all, and not a pickle either")


def _id(case: tuple[list[str], int, str]) -> str:
    args = [a for a in case[0] if a not in RUN[1:]] if case[0][:len(RUN)] == RUN else case[0]
    return " ".join(args)[:80] or "(none)"


@pytest.mark.parametrize("args, code, message", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_clean_line(args, code, message, world, monkeypatch):
    root, paths = world
    monkeypatch.chdir(root)  # relative defaults (results/runs, results/cache) land in the prepared folder
    monkeypatch.setenv("COLUMNS", "200")

    def no_training(*a, **k):
        raise RuntimeError("this case reached training instead of failing first")

    from bench.methods.core.base import FitContext

    monkeypatch.setattr(FitContext, "train_baseline", no_training)
    monkeypatch.setattr(FitContext, "fit_method", no_training)
    argv = [a.format(**paths) for a in args]
    got, out, err = run_main(argv)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message.format(**paths) in err, err
    assert got == code, err


def test_catalogue_is_large_and_has_no_duplicates():
    assert len(CASES) >= 150
    assert len({tuple(c[0]) for c in CASES}) == len(CASES)


def test_cuda_on_a_machine_without_it(world, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_main(["run", "--device", "cuda", "--out", f"{world[0]}/empty/cuda"])
    assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err
