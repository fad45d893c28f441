"""Replica storage: where each `Ready`'s `Durable` goes, and where a restart reads it back.

Shell side (STYLE §1, §5). `Store` is the contract; `SqlStore` keeps it on SQLAlchemy Core
(SQLite by default) and is the only code that touches the disk; `MemoryStore` keeps it in
memory for the simulator.
"""

from chubbypy.store._contract import Store
from chubbypy.store._memory import MemoryStore
from chubbypy.store._sql import SqlStore, StoreError

__all__ = ["MemoryStore", "SqlStore", "Store", "StoreError"]
