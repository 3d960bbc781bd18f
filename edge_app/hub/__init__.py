"""`edge-app hub`: the door's network side, in its own process and systemd unit.

The door process (`edge-app run`) keeps no network socket. The hub reaches it only through
the door's control socket (edge_app.control) and speaks to the network: MQTT with Home
Assistant discovery (edge_app.hub.mqtt), and whatever else registers as a component of
`Hub`. A crash or a hostile packet here can reach the relay only through the socket's
`unlock` request, which the door refuses unless its own config allows it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_app.hub.door import DoorHealth, DoorLink
    from edge_app.hub.runner import Component, Hub

__all__ = ["Component", "DoorHealth", "DoorLink", "Hub"]

# Read when first asked for, not when a module of the package is imported: the command
# line's help reads the unlock code's rule from edge_app.hub.code, and the door link and
# runner bring in the control socket's client (a tenth of a second).
_HOMES = {"DoorHealth": "door", "DoorLink": "door", "Component": "runner", "Hub": "runner"}


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"edge_app.hub.{_HOMES[name]}"), name)
