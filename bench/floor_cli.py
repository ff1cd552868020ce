"""The floor as a whole process: ``python -m bench.floor_cli PIPELINE.json``.

What the least an engine could do with a pipeline file of ``call:`` tasks costs, start to exit:
read it with :mod:`json`, import each distinct function, index the tasks and run them with the
floor's Kahn loop (:func:`bench.runners.floor.kahn_pool`) on a ``ThreadPoolExecutor`` as wide
as the file's ``concurrency``. No validation, no store, no output but one line of JSON with the
loop's own time (``exec_s``), the counterpart of corral's ``duration_s``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.runners.floor import kahn_pool


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    tasks: dict[str, dict[str, Any]] = doc["tasks"]
    ids = list(tasks)
    deps = [list(t.get("depends_on", ())) for t in tasks.values()]
    functions = {t["call"] for t in tasks.values()}
    if len(functions) != 1:
        raise SystemExit("floor_cli runs pipelines whose tasks all call one function")
    fn = _resolve(functions.pop())
    t0 = time.perf_counter()
    with ThreadPoolExecutor(int(doc.get("concurrency") or 8)) as pool:
        kahn_pool(pool, ids, deps, fn, [()] * len(ids))
    print(json.dumps({"exec_s": time.perf_counter() - t0, "tasks": len(ids)}))


if __name__ == "__main__":
    main(sys.argv[1])
