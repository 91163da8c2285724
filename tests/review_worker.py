"""A reader in a process of its own, for the tests of core.review that kill processes and race them: commits an
answer to each case id given, in order, and prints "committed <id>" after each commit has returned (and
"refused <id>" for one the store refused). Usage: python tests/review_worker.py URL READER_KEY CASE_ID...

With the environment variable REVIEW_WORKER_WAIT set to a file path, it waits for that file to exist before the
first answer, so that several workers start answering at the same moment."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from core.review import ReviewError, open_database
from core.review.store import commit_answer, reader_by_key


def main(url: str, key: str, case_ids: list[int]) -> None:
    engine = open_database(url)
    reader = reader_by_key(engine, key)
    gate = os.environ.get("REVIEW_WORKER_WAIT")
    print("ready", flush=True)
    while gate and not Path(gate).exists():
        time.sleep(0.005)
    for case_id in case_ids:
        try:
            commit_answer(engine, reader, case_id, "glioma", 3, f"answer of {reader.name} to {case_id}")
        except ReviewError:
            print(f"refused {case_id}", flush=True)
            continue
        print(f"committed {case_id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]])
