"""Evaluation protocols: which video ids form the train and test splits.

`full` evaluates every video (zero-shot studies, paper Table 3 and supp. Tables 1-2). `part` is the
paper's balanced subset for supervised comparison (Table 4, supplementary section 2): 72 training
and 74 test ids, copied from the paper's appendix into `eald/conf/protocol/part.yaml`, their only
copy. Protocols are plain config; this module only resolves them against a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

SPLITS = ("train", "test", "all")


def split_ids(
    protocol_name: str,
    train: Sequence[str] | None,
    test: Sequence[str] | None,
    split: str,
    dataset_ids: Sequence[str],
) -> list[str]:
    """Ids of `split` under a protocol. A `null` test list means every dataset id (protocol full)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    train_ids = [str(i) for i in train or []]
    test_ids = [str(i) for i in test] if test is not None else list(dataset_ids)
    if split == "train":
        if not train_ids:
            raise ValueError(f"protocol {protocol_name!r} has no training split")
        return train_ids
    if split == "test":
        return test_ids
    seen = dict.fromkeys(train_ids + test_ids)  # ordered union
    return list(seen)
