"""Global batches: every utterance once, longest first, target languages mixed in a batch."""

import numpy as np

from s2t_jax.evaluation.batches import plan_batches
from s2t_jax.evaluation.items import Item


def test_plan_batches_pads_and_mixes_languages():
    items = [Item(str(i), "", n, "") for i, n in enumerate([5, 50, 20, 40, 10])]
    forced = {0: None, 1: 7, 2: None, 3: 7, 4: 9}
    batches = plan_batches(items, [0, 1, 2, 3, 4], forced, batch_size=2)
    # Longest first, whatever the language: 50, 40 | 20, 10 | 5 and a dummy row.
    assert [rows for _, rows in batches] == [[1, 3], [2, 4], [0, -1]]
    # Each row carries its own forced token; None and dummy rows force nothing (-1).
    assert [bos.tolist() for bos, _ in batches] == [[7, 7], [-1, 9], [-1, -1]]
    assert all(bos.dtype == np.int32 for bos, _ in batches)
