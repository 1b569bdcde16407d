"""Evaluation protocols: which video ids form the train and test splits.

`full` evaluates every video (zero-shot studies, paper Table 3 and supp. Tables 1-2). `part` is the
paper's balanced subset for supervised comparison (Table 4, supplementary section 2): 72 training
and 74 test ids, copied from the paper's appendix. Protocols are plain config (`conf/protocol/`);
this module only resolves them against a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

# From the paper's supplementary material, section 2. Tests check these against conf/protocol/part.yaml.
PART_TRAIN: tuple[int, ...] = (
    2, 7, 10, 12, 13, 16, 22, 29, 31, 38, 45, 47, 48, 49, 51, 60, 61, 66, 67, 70, 78, 83, 87, 88,
    92, 97, 114, 115, 119, 120, 121, 123, 125, 130, 131, 132, 133, 136, 139, 145, 146, 148, 149,
    150, 153, 154, 157, 169, 175, 176, 180, 183, 189, 194, 195, 199, 203, 204, 213, 214, 215, 235,
    245, 246, 247, 248, 253, 256, 265, 269, 272, 274,
)  # fmt: skip
PART_TEST: tuple[int, ...] = (
    0, 1, 6, 15, 17, 23, 30, 32, 35, 41, 42, 50, 52, 53, 62, 71, 72, 76, 82, 84, 85, 86, 90, 93, 96,
    99, 100, 101, 105, 107, 109, 112, 113, 116, 117, 122, 124, 129, 134, 135, 155, 160, 177, 179,
    187, 191, 192, 193, 197, 198, 201, 206, 208, 217, 224, 227, 229, 234, 236, 241, 242, 243, 244,
    250, 251, 252, 257, 260, 261, 263, 266, 268, 270, 273,
)  # fmt: skip

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
