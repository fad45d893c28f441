"""Names, ACL names and limits: every rule of a well-formed name, every limit at its edge."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from attrs import asdict, evolve

from chubbypy.config import LimitsConfig, SessionsConfig
from chubbypy.namespace import DEFAULT_LIMITS, NamespaceLimits, check_acl, check_path
from chubbypy.protocol.errors import ErrorCode
from chubbypy.protocol.namespace import (
    AclNames,
    ContentGenerationIs,
    Create,
    Delete,
    Exists,
    GetContentsAndStat,
    GetStat,
    MultiOp,
    Read,
    ReadDir,
    SetAcl,
    SetContents,
    Write,
)
from tests.unit.namespace.harness import CELL, ROOT, Cell, at

ACL = AclNames("r", "w", "c")


def test_default_limits_are_the_documented_ones() -> None:
    """The defaults match the design, and the file limit matches the configuration's."""
    assert asdict(DEFAULT_LIMITS) == {
        "file_bytes_max": 262_144,
        "path_bytes_max": 1024,
        "component_bytes_max": 255,
        "depth_max": 32,
        "readdir_entries_max": 1000,
        "multiop_operations_max": 64,
        "acl_name_bytes_max": 255,
        "session_answers_max": 64,
        "nodes_per_principal_max": 20_000,
        "bytes_per_principal_max": 32 * 1024 * 1024,
        "quota_exempt": frozenset(),
    }
    assert DEFAULT_LIMITS.file_bytes_max == LimitsConfig().file_bytes_max
    assert DEFAULT_LIMITS.session_answers_max == SessionsConfig().answers_kept_max


@pytest.mark.parametrize("name", [n for n, v in asdict(DEFAULT_LIMITS).items() if type(v) is int])
def test_a_limit_below_one_is_a_programmer_error(name: str) -> None:
    """NamespaceLimits refuses a zero limit with an assertion."""
    with pytest.raises(AssertionError):
        NamespaceLimits(**{name: 0})


@pytest.mark.parametrize(
    "path",
    [ROOT, at("a"), at("a", "b", "c"), at("A-Z_a.z-0.9"), at("..."), at(".hidden"), at("-")],
)
def test_well_formed_names_are_accepted(path: str) -> None:
    """The root and names of components from [A-Za-z0-9._-] are well formed."""
    assert check_path(path, CELL, DEFAULT_LIMITS) is None


BAD_NAMES = {
    "empty": ("", "names start with /ls/c/"),
    "slash": ("/", "names start with /ls/c/"),
    "relative": ("ls/c/a", "names start with /ls/c/"),
    "no cell": ("/ls", "names start with /ls/c/"),
    "no cell, slash": ("/ls/", "names start with /ls/c/"),
    "another cell": ("/ls/d/a", "names start with /ls/c/"),
    "a cell with our prefix": ("/ls/cc/a", "names start with /ls/c/"),
    "upper-case prefix": ("/LS/c/a", "names start with /ls/c/"),
    "root with a slash": ("/ls/c/", "component 1 is empty"),
    "doubled slash": ("/ls/c//a", "component 1 is empty"),
    "trailing slash": ("/ls/c/a/", "component 2 is empty"),
    "dot": ("/ls/c/.", "relative names"),
    "dot dot": ("/ls/c/a/../b", "component 2 is '..'"),
    "space": ("/ls/c/a b", "character outside"),
    "non-ascii": ("/ls/c/caf\u00e9", "character outside"),
    "star": ("/ls/c/a*", "character outside"),
    "colon": ("/ls/c/host:80", "character outside"),
    "nul": ("/ls/c/a\x00", "character outside"),
}


@pytest.mark.parametrize(("path", "problem"), list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_malformed_names_are_invalid(path: str, problem: str) -> None:
    """Each malformed name gives INVALID_NAME with a message naming the problem."""
    failure = check_path(path, CELL, DEFAULT_LIMITS)
    assert failure is not None
    assert failure.code is ErrorCode.INVALID_NAME
    assert problem in failure.message


def test_component_length_limit() -> None:
    """A component of component_bytes_max bytes is accepted; one byte more is not."""
    assert check_path(at("x" * 255), CELL, DEFAULT_LIMITS) is None
    failure = check_path(at("x" * 256), CELL, DEFAULT_LIMITS)
    assert failure is not None
    assert "256 bytes long; at most 255" in failure.message


def test_depth_limit() -> None:
    """A name depth_max components below the root is accepted; one deeper is not."""
    assert check_path(at(*"a" * 32), CELL, DEFAULT_LIMITS) is None
    failure = check_path(at(*"a" * 33), CELL, DEFAULT_LIMITS)
    assert failure is not None
    assert "33 components below the cell root; at most 32" in failure.message


def test_path_length_limit() -> None:
    """A name of path_bytes_max bytes is accepted; one byte more is not."""
    exact = at("x" * 200, "x" * 200, "x" * 200, "x" * 200, "x" * (1024 - len(ROOT) - 805))
    assert len(exact) == 1024
    assert check_path(exact, CELL, DEFAULT_LIMITS) is None
    failure = check_path(exact + "x", CELL, DEFAULT_LIMITS)
    assert failure is not None
    assert "1025 bytes long; at most 1024" in failure.message


def test_the_message_of_a_huge_name_is_short() -> None:
    """A megabyte name is refused with a message that quotes only its start."""
    failure = check_path(at("x" * 1_000_000), CELL, DEFAULT_LIMITS)
    assert failure is not None
    assert len(failure.message) < 200


@pytest.mark.parametrize(
    ("acl", "problem"),
    [
        (AclNames("", "w", "c"), "the read ACL name is empty"),
        (AclNames("r", ".", "c"), "the write ACL name is '.'"),
        (AclNames("r", "w", "a/b"), "the change ACL name 'a/b' has a character outside"),
        (AclNames("r", "w", "x" * 256), "the change ACL name is 256 bytes long; at most 255"),
    ],
)
def test_malformed_acl_names_are_invalid(acl: AclNames, problem: str) -> None:
    """An ACL name names a file in the ACL directory, so it follows the component rules."""
    failure = check_acl(acl, DEFAULT_LIMITS)
    assert failure is not None
    assert failure.code is ErrorCode.INVALID_NAME
    assert problem in failure.message
    assert check_acl(AclNames("x" * 255, "all", "admin-group"), DEFAULT_LIMITS) is None


def test_acl_name_length_limit_is_its_own() -> None:
    """acl_name_bytes_max, not component_bytes_max, bounds an ACL name."""
    limits = evolve(DEFAULT_LIMITS, acl_name_bytes_max=3)
    assert check_acl(AclNames("abc", "abc", "abc"), limits) is None
    assert check_acl(AclNames("abc", "abcd", "abc"), limits) is not None


WRITES: dict[str, Callable[[str], Write]] = {
    "create": lambda path: Create(path),
    "create directory": lambda path: Create(path, is_directory=True),
    "set contents": lambda path: SetContents(path, b"x"),
    "delete": lambda path: Delete(path),
    "set acl": lambda path: SetAcl(path, ACL),
    "test in a guard": lambda path: MultiOp((Exists(path),), ()),
    "operation in if_true": lambda path: MultiOp((), (Create(path),)),
    "operation in if_false": lambda path: MultiOp((), (), (Delete(path),)),
}


@pytest.mark.parametrize("build", list(WRITES.values()), ids=list(WRITES))
@pytest.mark.parametrize("path", ["/ls/d/a", at("a", ""), at("a" * 256), at(*"a" * 33)])
def test_every_write_checks_its_names(build: Callable[[str], Write], path: str) -> None:
    """Every write, and every part of a MultiOp, refuses a malformed name as INVALID_NAME."""
    assert Cell().code(build(path)) is ErrorCode.INVALID_NAME


READS: dict[str, Callable[[str], Read]] = {
    "get stat": GetStat,
    "get contents": GetContentsAndStat,
    "read dir": ReadDir,
}


@pytest.mark.parametrize("build", list(READS.values()), ids=list(READS))
@pytest.mark.parametrize("path", ["/ls/d", "/ls/c/", at(".."), at("a" * 256)])
def test_every_read_checks_its_name(build: Callable[[str], Read], path: str) -> None:
    """Every read refuses a malformed name as INVALID_NAME."""
    assert Cell().read_code(build(path)) is ErrorCode.INVALID_NAME


@pytest.mark.parametrize(
    "write",
    [
        Create(at("f"), acl=AclNames("r", "", "c")),
        SetAcl(ROOT, AclNames("r", "w", "../x")),
        MultiOp((ContentGenerationIs(ROOT, 0),), (), (SetAcl(ROOT, AclNames("", "", "")),)),
    ],
)
def test_writes_check_acl_names(write: Write) -> None:
    """Create and SetAcl, alone or in a MultiOp, refuse malformed ACL names as INVALID_NAME."""
    assert Cell().code(write) is ErrorCode.INVALID_NAME
