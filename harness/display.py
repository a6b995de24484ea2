"""The campaign's live display: the current experiment, its elapsed budget, the best val_bpb
so far, kept/discarded/crashed counts and agent spend. One line rewritten in place on a
terminal; a line every `interval` seconds otherwise (logs, CI)."""
from __future__ import annotations

import sys
import threading
import time

from harness.summary import printable


class Display:
    def __init__(self, stream=None, interval: float | None = None):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval or (1.0 if self.tty else 15.0)
        self._stop = threading.Event()
        self._thread = None

    def note(self, msg: str) -> None:
        self._write(msg, final=True)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif text:
            self.stream.write(text + "\n")
        self.stream.flush()

    @staticmethod
    def status(campaign, seq: int, description: str, attempt: int, elapsed: float) -> str:
        counts = campaign.ledger.counts()
        best = campaign.best_val()
        budget = f"{elapsed:.0f} s elapsed" + (f" (training budget {campaign.budget_seconds:.0f} s + start-up, eval)"
                                               if campaign.budget_seconds else "")
        confirm = f" (confirm {attempt})" if attempt else ""
        best_s = f"{best:.6f}" if best is not None else "-"
        return (f"[exp {seq}{confirm}] {description[:60]} | {budget} | best {best_s} | kept {counts.get('keep', 0)} "
                f"discarded {counts.get('discard', 0)} crashed {counts.get('crash', 0) + counts.get('refused', 0)} "
                f"| agent ${campaign.agent_spent():.4f}")

    def start(self, seq: int, description: str, attempt: int, campaign) -> None:
        t0 = time.time()
        self._stop.clear()

        def tick():
            while True:
                self._write(self.status(campaign, seq, description, attempt, time.time() - t0), final=False)
                if self._stop.wait(self.interval):
                    return

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def result(self, row: dict) -> None:
        v = row.get("val_bpb")
        val = f"{v:.6f}" if v is not None else "-"
        why = " ".join(str(row.get("reason") or "").split())[:120]  # one line, whatever the model raised
        extra = f" ({printable(why)})" if row["status"] in ("crash", "refused") and why else ""
        self.note(f"[exp {row['seq']}] {row['status']:<8} val_bpb {val} | {row['description'][:70]}{extra}")
