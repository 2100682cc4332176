"""The table of contents: every method file is imported here, which registers it."""

from bench.methods.core import backbones  # noqa: F401  (registers lenet, lenet5, mlp, smallconvnet)
from bench.methods import msp, mcdropout  # noqa: F401
from bench.methods import confidnet  # noqa: F401
from bench.methods import trustscore  # noqa: F401
from bench.methods import energy  # noqa: F401
from bench.methods import maxlogit  # noqa: F401
from bench.methods import entropy  # noqa: F401
from bench.methods import temperature  # noqa: F401
from bench.methods import vector, matrix, dirichlet, histbin, isotonic  # noqa: F401  (calibration maps)
from bench.methods import ensemble  # noqa: F401
from bench.methods import trustgan  # noqa: F401  (also registers the trustgan-net backbone)
from bench.methods import oodgan, missingfeature  # noqa: F401
from bench.methods import advtrain, cure, distill  # noqa: F401
from bench.methods import logitnorm, edl, duq  # noqa: F401  (single-pass training methods)
from bench.methods.core import sn_nets  # noqa: F401  (registers the sn-resnet backbone DDU trains)
from bench.methods import ddu  # noqa: F401
from bench.methods import mahalanobis, rmd, knn, odin, vim, react, ash, gen, dice, scale  # noqa: F401  (detectors)
from bench.methods import doctor, relu, sirc, pnorm  # noqa: F401  (misclassification detectors)
from bench.methods import mdsens  # noqa: F401  (Lee et al.'s full multi-layer Mahalanobis)
from bench.methods import laplace, swag, sngp  # noqa: F401  (Bayesian: last-layer Laplace, SWAG, SNGP)
from bench.methods.core.registry import BACKBONES, METHODS

__all__ = ["METHODS", "BACKBONES"]
