"""Verification metrics shared by the pair tasks (kinship, recognition).

From per-pair scores (exact ROC, Youden's J threshold, TAR at a FAR) and
from score histograms summed on device during evaluation (AUC, best
accuracy), so that a whole split never has to be held per pair.
"""

import numpy as np



def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds) for `predict kin if score >= threshold`.

  Thresholds are the distinct scores in decreasing order, preceded by +inf
  (nothing accepted); ties are accepted together.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels) > 0
  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], labels[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tie
  tp = np.cumsum(y)[last]
  fp = np.cumsum(~y)[last]
  tpr = np.r_[0.0, tp / max(y.sum(), 1)]
  fpr = np.r_[0.0, fp / max((~y).sum(), 1)]
  return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
  fpr, tpr, _ = roc_curve(scores, labels)
  return float(np.trapezoid(tpr, fpr))


def youden_threshold(scores, labels) -> float:
  """The threshold maximising TPR - FPR (first one on ties)."""
  fpr, tpr, thr = roc_curve(scores, labels)
  return float(thr[int(np.argmax(tpr - fpr))])


def tar_at_far(scores, labels, far: float) -> float:
  """Highest TPR with FPR <= far."""
  fpr, tpr, _ = roc_curve(scores, labels)
  return float(np.max(np.where(fpr <= far + 1e-12, tpr, 0.0)))


def hist_auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """AUC from score histograms (ties within a bin count one half)."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  n = pos.sum() * neg.sum()
  if not n:
    return float("nan")
  below = np.cumsum(neg) - neg  # negatives in lower bins
  return float((pos * (below + 0.5 * neg)).sum() / n)


def hist_best_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
  tp = np.r_[np.cumsum(pos[::-1])[::-1], 0.0]
  fp = np.r_[np.cumsum(neg[::-1])[::-1], 0.0]
  total = max(pos.sum() + neg.sum(), 1.0)
  return float(((tp + neg.sum() - fp) / total).max())


def kfold_accuracy(dist, issame, folds: int = 10,
                   thresholds=None) -> dict[str, float]:
  """insightface's verification protocol on squared L2 distances.

  Pairs are cut into `folds` consecutive folds (no shuffling); in each,
  the threshold with the best accuracy on the other folds (the first of
  ties, over 0..4 in steps of 0.01: the range of ||a - b||^2 for unit
  embeddings) is applied to the fold. Returns the mean and standard
  deviation of the fold accuracies and the mean threshold.
  """
  dist = np.asarray(dist, np.float64)
  issame = np.asarray(issame, bool)
  if thresholds is None:
    thresholds = np.arange(0, 4, 0.01)
  n = len(dist)
  if n < folds:
    raise ValueError(f"{n} pairs cannot make {folds} folds")
  # Fold sizes as sklearn's KFold(folds, shuffle=False): the first n % folds
  # folds hold one pair more.
  sizes = [n // folds + (k < n % folds) for k in range(folds)]
  bounds = np.r_[0, np.cumsum(sizes)]
  # accuracy[t, i]: is pair i right at threshold t (same if dist < t).
  right = (dist[None, :] < np.asarray(thresholds)[:, None]) == issame[None]
  accs, chosen = [], []
  for k in range(folds):
    test = np.zeros(n, bool)
    test[bounds[k]:bounds[k + 1]] = True
    best = int(np.argmax(right[:, ~test].mean(1)))
    accs.append(right[best, test].mean())
    chosen.append(thresholds[best])
  return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)),
          "threshold": float(np.mean(chosen)), "pairs": int(n)}
