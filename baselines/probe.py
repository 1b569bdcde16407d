"""The linear probe: a linear head trained on frozen features (paper Table 4).

- Features are standardised with the training set's mean and std (the frozen models' features
  have very different scales; AdamW with one lr needs them comparable).
- Head: nn.Linear(D, 2), softmax cross-entropy; labels positive = 1, negative = 0.
- AdamW; per-step schedule: linear warm-up over `warmup_epochs` epochs, then cosine decay to 0
  at the last step of `epochs` epochs (LambdaLR). The paper gives none of these values.
- Determinism: torch.manual_seed(seed) for the head's initialisation, a separate
  torch.Generator(seed) for shuffling, deterministic algorithms on; training always runs on CPU.
- Early stopping (optional): validation loss after each epoch; stop after `patience` epochs
  without a new minimum; the best head is restored.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from eald.data.taxonomy import POSITIVE


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.5
    batch_size: int = 16
    seed: int = 0
    early_stopping: bool = False
    patience: int = 5


@dataclass
class ProbeResult:
    head: nn.Linear
    mean: np.ndarray
    std: np.ndarray
    epochs_run: int
    best_epoch: int  # 1-based; the last epoch without early stopping
    final_train_loss: float  # mean loss over the last epoch's steps
    history: list[dict[str, float]] = field(default_factory=list)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, 2) class probabilities: column 1 is P(positive)."""
        z = torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))
        with torch.no_grad():
            return torch.softmax(self.head(z), dim=1).numpy()


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR factor for optimizer step `step` (0-based): (step + 1) / warmup_steps during the
    warm-up (so the first step does not waste itself at lr 0), then half a cosine from 1 down to
    0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def schedule_steps(n: int, batch_size: int, epochs: int, warmup_epochs: float) -> tuple[int, int]:
    """(total_steps, warmup_steps) for n training samples."""
    per_epoch = math.ceil(n / batch_size)
    # Half up (not Python's half-to-even round): 2.5 epochs x 5 steps is 13 warm-up steps.
    return epochs * per_epoch, int(math.floor(warmup_epochs * per_epoch + 0.5))


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> LambdaLR:
    return LambdaLR(opt, lambda s: warmup_cosine(s, total_steps, warmup_steps))


def _rank(video_id: str) -> str:
    return hashlib.sha256(f"eald-val:{video_id}".encode()).hexdigest()


def stratified_val_split(
    ids: Sequence[str], labels: Sequence[str], fraction: float
) -> tuple[list[str], list[str]]:
    """(train ids, val ids): per label, ids sorted by sha256 and the first round(fraction * n)
    go to validation, at most n - 1 so each label keeps a training example. Independent of the
    seed and of the ids' order, so every run (and every seed) validates on the same videos."""
    val: set[str] = set()
    for label in sorted(set(labels)):
        group = sorted((i for i, y in zip(ids, labels, strict=True) if y == label), key=_rank)
        k = min(len(group) - 1, int(round(fraction * len(group))))
        val.update(group[: max(0, k)])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


@contextmanager
def _deterministic() -> Iterator[None]:
    # Restores the caller's settings: both are process-wide. One thread: a (D, 2) head gains
    # nothing from more, reduction order then does not depend on the machine's core count, and
    # on a loaded machine extra threads only make the tiny ops wait for each other.
    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(threads)


def labels_to_targets(labels: Sequence[str]) -> np.ndarray:
    return np.array([1 if y == POSITIVE else 0 for y in labels], dtype=np.int64)


def train_probe(
    x: np.ndarray,
    y: np.ndarray,
    s: ProbeSettings,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> ProbeResult:
    """Train a linear head on (N, D) features and (N,) 0/1 targets."""
    if len(x) == 0:
        raise ValueError("no training features")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)  # constant features: leave them centred, not blown up
    use_val = s.early_stopping and x_val is not None and y_val is not None and len(x_val) > 0
    with _deterministic():
        torch.manual_seed(s.seed)
        head = nn.Linear(x.shape[1], 2)
        gen = torch.Generator().manual_seed(s.seed)
        xt = torch.from_numpy(((x - mean) / std).astype(np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        if use_val:
            xv = torch.from_numpy(((x_val - mean) / std).astype(np.float32))
            yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64))
        opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        total, warm = schedule_steps(len(xt), s.batch_size, s.epochs, s.warmup_epochs)
        sched = make_scheduler(opt, total, warm)
        loss_fn = nn.CrossEntropyLoss()
        best_loss, best_epoch, best_state, bad = math.inf, s.epochs, None, 0
        history: list[dict[str, float]] = []
        epoch_loss = math.nan
        epoch = 0
        for epoch in range(1, s.epochs + 1):
            head.train()
            order = torch.randperm(len(xt), generator=gen)
            losses = []
            for lo in range(0, len(xt), s.batch_size):
                idx = order[lo : lo + s.batch_size]
                loss = loss_fn(head(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
            epoch_loss = float(np.mean(losses))
            entry = {"epoch": epoch, "train_loss": epoch_loss, "lr": opt.param_groups[0]["lr"]}
            if use_val:
                head.eval()
                with torch.no_grad():
                    val_loss = float(loss_fn(head(xv), yv))
                entry["val_loss"] = val_loss
                if val_loss < best_loss:
                    best_loss, best_epoch, bad = val_loss, epoch, 0
                    best_state = copy.deepcopy(head.state_dict())
                else:
                    bad += 1
            history.append(entry)
            if use_val and bad >= s.patience:
                break
        if best_state is not None:
            head.load_state_dict(best_state)
        else:
            best_epoch = epoch
        head.eval()
    return ProbeResult(head, mean, std, epoch, best_epoch, epoch_loss, history)


def confidence_1_10(p: float) -> int:
    """The predicted class's probability (0.5-1) as round(10 p) clipped to 1..10, so rows carry a
    number on the judge's scale; it is a calibrated-ish probability, NOT comparable to the
    judge's score (the paper's `score`)."""
    return int(min(10, max(1, round(10 * p))))
