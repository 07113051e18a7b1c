"""synapse-tchap-guard: stop one hijacked account from emptying a homeserver.

`TchapGuard` (in `module`) is the module Synapse loads; it is imported when first
named, so that the admin command line (`admin_cli`), which runs without Synapse on
an admin's own machine, imports nothing of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written (setup.cfg reads it); see docs/releasing.md.
__version__ = "0.2.0"
__all__ = ["TchapGuard"]

if TYPE_CHECKING:
    from synapse_tchap_guard.module import TchapGuard


def __getattr__(name: str) -> Any:
    if name == "TchapGuard":
        from synapse_tchap_guard.module import TchapGuard

        return TchapGuard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
