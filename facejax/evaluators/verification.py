"""Verification metrics: the one definition every pair task uses.

SwinFace (recognition), kinship and caricature (cross-domain
verification) all score their pairs here, so that their numbers compare.
From per-pair scores (exact ROC, ROC AUC, Youden's J threshold, TAR at a
FAR) and from score histograms summed on device during evaluation (AUC,
best accuracy, TAR at a FAR), so that a whole split never has to be held
per pair; and insightface's k-fold accuracy on distances.

Conventions, for scores and histograms alike:
  * A pair is accepted ("same" / "kin") when its score >= the threshold.
  * Operating points: the exact ROC's thresholds are the distinct scores
    (ties are accepted or rejected together, never split), preceded by +inf
    (nothing accepted: FPR = TPR = 0); a histogram's thresholds are its bin
    edges (a bin is accepted or rejected whole: pairs in one bin are ties).
  * TAR@FAR (`tar_at_far`, `hist_tar_at_far`): the highest TPR among the
    operating points whose FPR <= far (1e-12 of slack for float round-off
    of FP / N). No interpolation between operating points, so the FAR is
    never exceeded: with N negatives at most floor(far * N) of them are
    accepted (none at far < 1 / N, where the TAR is that of the threshold
    just above the highest negative). A set without positives has TAR 0.
  * Best threshold: Youden's J (TPR - FPR) maximised, the first (highest)
    threshold of ties (`youden_threshold`).
"""

import numpy as np


def from_pos_neg(pos, neg) -> tuple[np.ndarray, np.ndarray]:
  """(scores, labels) of positive-pair and negative-pair score lists."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  return (np.concatenate([pos, neg]),
          np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]))


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
  """Area under the exact ROC: P(pos > neg) + P(tie) / 2."""
  fpr, tpr, _ = roc_curve(scores, labels)
  return float(np.trapezoid(tpr, fpr))


def youden_threshold(scores, labels) -> float:
  """The threshold maximising TPR - FPR (first one on ties)."""
  fpr, tpr, thr = roc_curve(scores, labels)
  return float(thr[int(np.argmax(tpr - fpr))])


def _tar(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
  """The highest TPR of the operating points with FPR <= far."""
  return float(np.max(np.where(fpr <= far + 1e-12, tpr, 0.0)))


def tar_at_far(scores, labels, far: float) -> float:
  """TAR at FAR `far` of per-pair scores (the module docstring's rule)."""
  fpr, tpr, _ = roc_curve(scores, labels)
  return _tar(fpr, tpr, far)


def hist_auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """AUC from score histograms (ties within a bin count one half)."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  n = pos.sum() * neg.sum()
  if not n:
    return float("nan")
  below = np.cumsum(neg) - neg  # negatives in lower bins
  return float((pos * (below + 0.5 * neg)).sum() / n)


def _hist_accepted(pos: np.ndarray, neg: np.ndarray):
  """(tp, fp): pairs accepted at each bin edge t = 0..bins (bins >= t)."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  return (np.r_[np.cumsum(pos[::-1])[::-1], 0.0],
          np.r_[np.cumsum(neg[::-1])[::-1], 0.0])


def hist_roc(pos: np.ndarray, neg: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
  """(fpr, tpr) at each bin edge of score histograms `pos`, `neg` (bin i
  counts the scores of its range; thresholds are the bin edges)."""
  tp, fp = _hist_accepted(pos, neg)
  return fp / max(fp[0], 1.0), tp / max(tp[0], 1.0)


def hist_tar_at_far(pos: np.ndarray, neg: np.ndarray, far: float) -> float:
  """TAR at FAR `far` from score histograms (the module docstring's rule,
  with the bin edges as thresholds)."""
  return _tar(*hist_roc(pos, neg), far)


def hist_best_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
  """The accuracy of the best bin-edge threshold (chosen on these pairs
  themselves: optimistic); 0 without pairs."""
  tp, fp = _hist_accepted(pos, neg)
  total = max(tp[0] + fp[0], 1.0)
  return float(((tp + fp[0] - fp) / total).max())


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
