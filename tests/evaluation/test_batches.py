"""Global batches: every utterance once, one forced language per batch, longest first."""

from s2t_jax.evaluation.batches import plan_batches
from s2t_jax.evaluation.items import Item


def test_plan_batches_pads_and_groups():
    items = [Item(str(i), "", n, "") for i, n in enumerate([5, 50, 20, 40, 10])]
    forced = {0: None, 1: 7, 2: None, 3: 7, 4: None}
    batches = plan_batches(items, [0, 1, 2, 3, 4], forced, batch_size=2)
    assert sorted(i for _, b in batches for i in b if i >= 0) == [0, 1, 2, 3, 4]
    assert all(len(b) == 2 for _, b in batches)
    assert all(len({forced[i] for i in b if i >= 0}) == 1 for _, b in batches)
    assert [b for bos, b in batches if bos == 7] == [[1, 3]]  # longest first
    assert [b for bos, b in batches if bos is None] == [[2, 4], [0, -1]]
