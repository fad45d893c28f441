"""Per-principal quotas on nodes and bytes. Pure: looks at the tree, changes nothing.

Chubby's files are small (256 KiB at most), and the whole namespace lives in every
replica's memory and in every snapshot, so no one principal may fill it: ZooKeeper and etcd
have quotas for the same reason. The quotas are part of the replicated state machine, so
every replica agrees on every refusal:

* A node counts against the principal that created it: the principal the master proposed
  the creating write for, which the log command carries and the node's record keeps
  (`NodeRecord.creator`). A file's contents count against the same principal, whoever
  writes them (a principal that lets others write its files lends them its quota; every
  byte in the cell still counts against someone, so the cell holds at most the sum of the
  quotas).
* A Create is refused if its creator would then have more than
  ``limits.nodes_per_principal_max`` nodes, or its files more than
  ``limits.bytes_per_principal_max`` bytes; a SetContents that grows a file is refused if
  the file's creator would then pass the bytes quota. Shrinking and deleting are never
  refused, so a principal over its quota (the quota was lowered) can always get under it.
* The cell's operators (``auth.admins``, `NamespaceLimits.quota_exempt`) are exempt (their
  nodes are counted, never refused): they hold the ACL files and may need room to repair
  anything. So are nodes with no creator:
  the cell's own (its ACL directory), a trusted caller's, and every node created before
  nodes kept their creator (snapshot formats 1 to 3, log entries without a principal).

A refusal is RESOURCE_EXHAUSTED, naming the principal and the configuration key; nothing
is changed.
"""

from __future__ import annotations

from chubbypy.namespace._records import NodeRecord
from chubbypy.namespace._tree import Tree, Usage
from chubbypy.protocol.errors import ErrorCode, Failure
from chubbypy.protocol.namespace import Create, SetContents, Write


def charged(tree: Tree, principal: str) -> bool:
    """Whether quotas apply to `principal`."""
    return bool(principal) and principal not in tree.limits.quota_exempt


def create_problem(tree: Tree, principal: str, create: Create) -> Failure | None:
    """RESOURCE_EXHAUSTED if `principal` may not create `create`'s node, else None."""
    if not charged(tree, principal):
        return None
    usage, most = tree.usage(principal), tree.limits.nodes_per_principal_max
    if usage.nodes >= most:
        message = (
            f"{create.path}: principal {principal!r} has {usage.nodes} nodes; "
            f"limits.nodes_per_principal_max is {most} (delete some first)"
        )
        return Failure(ErrorCode.RESOURCE_EXHAUSTED, message)
    return _bytes_problem(tree, create.path, principal, usage, len(create.contents))


def growth_problem(tree: Tree, node: NodeRecord, contents: bytes) -> Failure | None:
    """RESOURCE_EXHAUSTED if writing `contents` to the file `node` would take its creator
    past its bytes quota, else None."""
    growth = len(contents) - len(node.contents)
    if growth <= 0 or not charged(tree, node.creator):
        return None
    return _bytes_problem(tree, node.path, node.creator, tree.usage(node.creator), growth)


def quota_problem(tree: Tree, principal: str, write: Write) -> Failure | None:
    """The refusal `apply` would give `write` for a quota, as things stand, for a master
    to refuse it before it costs a log entry; None if it would pass, or for a MultiOp
    (whose operations see each other's changes: the log decides)."""
    match write:
        case Create(path) if tree.get(path) is None:
            return create_problem(tree, principal, write)
        case SetContents(path, contents):
            node = tree.get(path)
            if node is not None and not node.is_directory:
                return growth_problem(tree, node, contents)
    return None


def _bytes_problem(
    tree: Tree, path: str, principal: str, usage: Usage, growth: int
) -> Failure | None:
    most = tree.limits.bytes_per_principal_max
    if usage.bytes + growth <= most:
        return None
    message = (
        f"{path}: the files of principal {principal!r} hold {usage.bytes} bytes; {growth} "
        f"more would pass limits.bytes_per_principal_max, {most}"
    )
    return Failure(ErrorCode.RESOURCE_EXHAUSTED, message)
