"""The replicated database of a cell: files, directories, ACL names and generations.

Pure (STYLE §1, §5): a deterministic state machine applied from the Paxos log. `apply`
changes a `Tree` and returns what it did; `read` answers from memory; `NamespaceMachine`
wraps both as the `chubbypy.paxos.StateMachine` the Applier drives, with snapshots and the
`NodeRecord`s a checkpoint stores.
"""

from chubbypy.namespace._acl import (
    ADMIN,
    EVERYONE,
    PROTECTED_ACL,
    Access,
    AclFileNeeded,
    access_problem,
    acl_directory,
    acl_file_admits,
    acl_files_needed,
    acl_path,
    admins_file,
    admits,
    exposed_acl_directory,
    listed_principals,
    protect_acl_directory,
    write_problem,
)
from chubbypy.namespace._apply import (
    Applied,
    apply,
    request_problem,
    retried_session,
    stale_call,
)
from chubbypy.namespace._machine import (
    DEFAULT_LIMITS,
    ROOT_ACL_DEFAULT,
    AppliedWrite,
    NamespaceMachine,
)
from chubbypy.namespace._names import NamespaceLimits, check_acl, check_path
from chubbypy.namespace._quota import quota_problem
from chubbypy.namespace._read import read
from chubbypy.namespace._records import (
    NamespaceChanges,
    NodeRecord,
    contents_checksum,
    decode_snapshot,
    encode_snapshot,
)
from chubbypy.namespace._tree import INSTANCES_PER_INDEX, Tree, Usage

__all__ = [
    "ADMIN",
    "DEFAULT_LIMITS",
    "EVERYONE",
    "INSTANCES_PER_INDEX",
    "PROTECTED_ACL",
    "ROOT_ACL_DEFAULT",
    "Access",
    "AclFileNeeded",
    "Applied",
    "AppliedWrite",
    "NamespaceChanges",
    "NamespaceLimits",
    "NamespaceMachine",
    "NodeRecord",
    "Tree",
    "Usage",
    "access_problem",
    "acl_directory",
    "acl_file_admits",
    "acl_files_needed",
    "acl_path",
    "admins_file",
    "admits",
    "apply",
    "check_acl",
    "check_path",
    "contents_checksum",
    "decode_snapshot",
    "encode_snapshot",
    "exposed_acl_directory",
    "listed_principals",
    "protect_acl_directory",
    "quota_problem",
    "read",
    "request_problem",
    "retried_session",
    "stale_call",
    "write_problem",
]
