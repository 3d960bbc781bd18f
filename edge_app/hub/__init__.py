"""`edge-app hub`: the door's network side, in its own process and systemd unit.

The door process (`edge-app run`) keeps no network socket. The hub reaches it only through
the door's control socket (edge_app.control) and speaks to the network: MQTT with Home
Assistant discovery (edge_app.hub.mqtt), and whatever else registers as a component of
`Hub`. A crash or a hostile packet here can reach the relay only through the socket's
`unlock` request, which the door refuses unless its own config allows it.
"""

from edge_app.hub.door import DoorHealth, DoorLink
from edge_app.hub.runner import Component, Hub

__all__ = ["Component", "DoorHealth", "DoorLink", "Hub"]
