"""`Memo`: the one memo every reader keeps. Bounded (least recently used dropped), locked, and shared by every session
of a server process; arrays it hands out are read-only, so no caller can change what another sees."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


class Memo:
    """Results by key, at most ``size`` of them. ``get(key, compute)`` returns the remembered value or computes it
    outside the lock (two sessions may compute one value once each; none waits on another)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)
