"""Best-fit packing: fixed-length rows, BOS first, no padding, nothing invented."""
import numpy as np
import pytest

from trainer.packing import BestFitPacker

BOS = 999


def docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[BOS], rng.integers(0, 500, n - 1)]) for n in lengths]


def test_rows_are_full_and_start_with_bos():
    rng = np.random.default_rng(1)
    ds = docs(rng.integers(2, 300, 500))
    rows = list(BestFitPacker(ds, 129, buffer_docs=64))
    assert rows and all(len(r) == 129 for r in rows)
    assert all(r[0] == BOS for r in rows)
    # No padding: every token in a row comes from some document, in order.
    all_tokens = set(np.concatenate(ds).tolist())
    assert all(set(r.tolist()) <= all_tokens for r in rows)


def test_best_fit_prefers_the_largest_document_that_fits():
    ds = docs([5, 7, 3, 10])
    packer = BestFitPacker(ds, 10, buffer_docs=10)
    assert packer.next_row().tolist() == ds[3].tolist()  # the 10 fits exactly
    row = packer.next_row()  # then 7 + 3 fill the next row exactly
    assert row.tolist() == ds[1].tolist() + ds[2].tolist()


def test_crops_longest_when_nothing_fits_and_keeps_its_tail():
    ds = docs([8, 9])
    packer = BestFitPacker(ds, 5, buffer_docs=10)
    assert packer.next_row().tolist() == ds[1][:5].tolist()  # the longest is cropped
    # Its tail comes back behind a BOS (5 tokens: BOS + 4), and fits the next row exactly.
    assert packer.next_row().tolist() == [BOS] + ds[1][5:].tolist()
    assert packer.next_row().tolist() == ds[0][:5].tolist()


def test_every_token_used_when_docs_fit_exactly():
    ds = docs([4, 6, 2, 8, 5, 5] * 10, seed=3)
    rows = list(BestFitPacker(ds, 10, buffer_docs=100))
    assert sum(map(len, rows)) == sum(map(len, ds))
    assert sorted(np.concatenate(rows).tolist()) == sorted(np.concatenate(ds).tolist())


def test_partial_last_row_dropped_and_bad_len():
    rows = list(BestFitPacker(docs([3, 3]), 10))
    assert rows == []
    with pytest.raises(ValueError):
        BestFitPacker([], 1)


def test_dataloader_rows(use_cache):
    import torch

    from trainer import prepare

    tok = prepare.Tokenizer.from_directory()
    loader = prepare.make_dataloader(tok, 4, 64, "train")
    x, y, epoch = next(loader)
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.int64 and epoch == 1
    assert (x[:, 0] == tok.get_bos_token_id()).all()
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    val = list(prepare.make_dataloader(tok, 4, 64, "val"))
    again = list(prepare.make_dataloader(tok, 4, 64, "val"))
    assert len(val) > 10 and all(torch.equal(a[0], b[0]) for a, b in zip(val, again))  # fixed split
    assert all(e == 1 for _, _, e in val)  # val is read once, never cycled


def test_tags_report_the_newest_document_used():
    ds = [(1, d) for d in docs([5, 5])] + [(2, d) for d in docs([5, 5], seed=2)]
    packer = BestFitPacker(iter(ds), 5, buffer_docs=1, tagged=True)
    tags = []
    while packer.next_row() is not None:
        tags.append(packer.last_tag)
    assert tags == [1, 1, 2, 2]
