"""The independent reference behind tests/test_conformal.py's MAPIE constants: run with MAPIE's own venv, not bench's
(``python3 -m venv .venv-mapie && .venv-mapie/bin/pip install numpy scikit-learn mapie``, MAPIE
1.6.0), ``.venv-mapie/bin/python tools/conformal_mapie_reference.py``. Prints LAC's quantile and sets and the
non-randomised APS scores of the true labels for the constructed case that the test holds literally."""

import numpy as np
from mapie.classification import SplitConformalClassifier
from mapie.conformity_scores.sets.aps import APSConformityScore
from sklearn.base import BaseEstimator, ClassifierMixin

# integer weights per class (rows normalised to probabilities), labels: the same literals as the test; no true label
# ties with another class (MAPIE orders tied classes by an unstable argsort, bench by class index)
CAL_W = [[9, 3, 1, 1], [2, 8, 1, 3], [1, 1, 6, 2], [5, 4, 1, 2], [1, 2, 3, 9], [7, 1, 1, 1], [3, 5, 2, 2],
         [1, 1, 1, 7], [5, 2, 6, 1], [2, 3, 4, 1], [8, 1, 3, 1], [1, 9, 1, 1], [3, 1, 7, 4], [2, 6, 5, 1],
         [6, 1, 2, 5], [1, 3, 1, 5], [4, 2, 9, 1], [6, 5, 1, 2], [1, 1, 4, 8]]
CAL_Y = [0, 1, 2, 1, 3, 0, 2, 3, 0, 3, 2, 1, 2, 2, 3, 1, 2, 0, 2]
TEST_W = [[6, 2, 1, 1], [1, 1, 5, 3], [3, 3, 3, 1], [1, 7, 1, 1], [2, 1, 1, 2], [4, 1, 5, 1], [1, 2, 1, 8],
          [5, 4, 1, 1]]


class Fixed(ClassifierMixin, BaseEstimator):
    """A prefit classifier whose X are already the probabilities."""

    def fit(self, X, y):
        self.classes_ = np.arange(4)
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)

    def predict(self, X):
        return np.asarray(X).argmax(1)


def probs(w):
    w = np.asarray(w, dtype=float)
    return w / w.sum(1, keepdims=True)


cal, test, y = probs(CAL_W), probs(TEST_W), np.asarray(CAL_Y)
est = Fixed().fit(cal, y)
for level in (0.9, 0.8):  # MAPIE refuses 1/alpha >= n (0.95 needs n > 20)
    scc = SplitConformalClassifier(est, confidence_level=level, conformity_score="lac", prefit=True)
    scc.conformalize(cal, y)
    _, sets = scc.predict_set(test)
    q = scc._mapie_classifier.conformity_score_function_.quantiles_
    print(f"LAC level {level}: qhat {q.tolist()} sets {sets[:, :, 0].astype(int).tolist()}")
cum, rank = APSConformityScore.get_true_label_cumsum_proba(y, cal, np.arange(4))
print("APS non-randomised true-label scores", [round(float(v), 12) for v in cum.ravel()])
print("true-label ranks", rank.tolist())
