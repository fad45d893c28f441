"""chubbypy: a Chubby-style coordination and lock service on a Multi-Paxos replicated log.

Core packages (pure, deterministic): `protocol`, `paxos`, `namespace`, `locks`, `sessions`.
Shells: `store` (SQLAlchemy), `testing` (the deterministic cell simulator), `cli`.
"""

__all__: list[str] = []
