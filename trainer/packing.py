"""Best-fit packing of documents into fixed-length rows (immutable).

Every document starts with BOS, so every row starts with BOS too. Rows are filled
exactly (no padding): the largest buffered document that fits the remaining space
goes in first; when none fits, the longest one is cropped to fill the row and its tail
goes back to the buffer behind a fresh BOS. No token is dropped, which matters when
documents are longer than rows (Shakespeare's scenes are ~2k tokens; upstream's
cropping would discard most of them).
"""
from __future__ import annotations

import bisect
from typing import Iterable, Iterator

import numpy as np


class BestFitPacker:
    """Packs token sequences (each beginning with BOS) into rows of `row_len` tokens.

    `docs` yields arrays, or (tag, array) pairs with `tagged=True`; `last_tag` is then
    the largest tag among the documents of the last row (the dataloader's epoch). Tags
    never mix early: a document with a larger tag enters the buffer only once the
    documents with smaller tags are used up.
    """

    def __init__(self, docs: Iterable, row_len: int, buffer_docs: int = 1000, tagged: bool = False):
        if row_len < 2:
            raise ValueError(f"row_len must be >= 2, got {row_len}")
        self.row_len = row_len
        self.buffer_docs = buffer_docs
        self._docs = iter(docs)
        self._lens: list[int] = []  # sorted lengths of buffered docs
        self._buf: list[np.ndarray] = []  # docs, parallel to _lens
        self._tags: list = []  # parallel to _lens
        self.tagged = tagged
        self.last_tag = None
        self._pending = None  # a newer-tag item held back until the buffer drains
        self.exhausted = False

    def _refill(self) -> None:
        while not self.exhausted and len(self._buf) < self.buffer_docs:
            if self._pending is not None:
                item, self._pending = self._pending, None
            else:
                try:
                    item = next(self._docs)
                except StopIteration:
                    self.exhausted = True
                    return
            tag, doc = item if self.tagged else (None, item)
            if self.tagged and self._tags and tag > max(self._tags):
                self._pending = item
                return
            if len(doc) == 0:
                continue
            i = bisect.bisect_left(self._lens, len(doc))
            self._lens.insert(i, len(doc))
            self._buf.insert(i, doc)
            self._tags.insert(i, tag)

    def _take(self, i: int) -> np.ndarray:
        self._lens.pop(i)
        tag = self._tags.pop(i)
        if self.tagged:
            self.last_tag = tag if self.last_tag is None else max(self.last_tag, tag)
        return self._buf.pop(i)

    def next_row(self) -> np.ndarray | None:
        """One row of exactly row_len tokens, or None when the documents ran out."""
        self._refill()
        if not self._buf:
            return None
        parts, space = [], self.row_len
        self.last_tag = None
        while space > 0:
            self._refill()
            if not self._buf:
                # Out of documents mid-row: the partial row is dropped (no padding).
                return None
            i = bisect.bisect_right(self._lens, space) - 1  # largest doc that fits
            if i >= 0:
                doc = self._take(i)
            else:  # none fits: crop the longest, requeue its tail behind its BOS
                tag = self._tags[-1]
                whole = self._take(len(self._buf) - 1)
                doc, tail = whole[:space], np.concatenate([whole[:1], whole[space:]])
                j = bisect.bisect_left(self._lens, len(tail))
                self._lens.insert(j, len(tail))
                self._buf.insert(j, tail)
                self._tags.insert(j, tag)
            parts.append(doc)
            space -= len(doc)
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        while (row := self.next_row()) is not None:
            yield row
