"""host[:port]: the one grammar of a host and its port, and the rules on each part.

Three readers share it, and differ on purpose; each difference is a parameter or a rule it
applies, never a copy of the grammar:

  - a Host header (edge_app.web.origins.split_host) is only compared with the names the page
    answers to, never resolved: a name may hold "_" (some resolvers and /etc/hosts take it),
    the port may be any 1 to 5 digits, and the name rules below do not apply;
  - the authority of a configured origin, web.public_origin (edge_app.config.split_origin):
    no "_", a name that a browser opens and the resolver looks up, a port of 1 to 65535;
  - a listen address, web.listen (edge_app.config.split_listen): the port is required and
    in range, and the host is kept as written (the socket reads it).

It imports nothing of the app: the config reads it, and the web package through the config.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# A name or IPv4 address, or [IPv6], and an optional port, matched whole (fullmatch: `$`
# would let a trailing newline through) and in ASCII ([0-9]: `\d` takes any script's digits,
# which int() reads). A name may hold "_" here: read_authority's `underscore` says who may.
_AUTHORITY = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?"
)
# The last label of a name a browser reads as a number, so the name as an IPv4 address (the
# URL standard's "ends in a number": decimal digits, or 0x and hex digits).
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
MAX_PORT = 65535


@dataclass(frozen=True)
class Authority:
    """host[:port] as written: `host` is a name or IPv4 address, or (`ipv6`) the text the
    brackets held; `port` is None when there is none."""

    host: str
    port: int | None
    ipv6: bool


def read_authority(
    text: str, *, underscore: bool = False, port_required: bool = False
) -> Authority | None:
    """The parts of `host[:port]`, or None when `text` is not that. `underscore`: a name may
    hold "_"; `port_required`: `host` alone is not enough. Only the shape is checked here:
    normal_host reads the IPv6 address, port_problem and name_problem apply the rest."""
    match = _AUTHORITY.fullmatch(text)
    if match is None:
        return None
    name = match["name"]
    if name is not None and not underscore and "_" in name:
        return None
    if port_required and match["port"] is None:
        return None
    port = None if match["port"] is None else int(match["port"])
    return Authority(host=name or match["ipv6"], port=port, ipv6=name is None)


def address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as a browser writes it in a URL (the URL Standard's serializer): IPv4 in
    dotted decimal; IPv6 as eight hexadecimal pieces without leading zeros, the first longest
    run of two or more zero pieces written "::". Python's own text differs from 3.13 on for an
    IPv4-mapped address ("::ffff:127.0.0.1", where a browser sends "::ffff:7f00:1")."""
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    packed = address.packed
    pieces = [f"{packed[i] << 8 | packed[i + 1]:x}" for i in range(0, 16, 2)]
    best, best_length, start = 0, 0, None
    for index, piece in enumerate([*pieces, "end"]):
        if piece == "0":
            start = index if start is None else start
            continue
        if start is not None and index - start >= 2 and index - start > best_length:
            best, best_length = start, index - start
        start = None
    if not best_length:
        return ":".join(pieces)
    return ":".join(pieces[:best]) + "::" + ":".join(pieces[best + best_length :])


def normal_host(authority: Authority) -> str:
    """The host as a browser writes it in an origin: a name in lower case, an IPv6 address
    compressed and without its brackets; ValueError when the brackets hold no IPv6 address."""
    if not authority.ipv6:
        return authority.host.lower()
    try:
        address = ipaddress.IPv6Address(authority.host)
    except ValueError:
        raise ValueError(f"[{authority.host}] is not an IPv6 address") from None
    return address_text(address)


def port_problem(port: int) -> str | None:
    """None for a port a socket can use: 1 to 65535 (0 asks the system for any port)."""
    if 1 <= port <= MAX_PORT:
        return None
    return f"port {port} is out of range (1 to {MAX_PORT})"


# The longest label (the part between dots) a host name may have (RFC 1035).
MAX_LABEL = 63


def host_name_problem(host: str) -> str | None:
    """The one rule for a host name the resolver can use (mqtt.host when the config is read
    and again in edge_app.hub.mqtt.make_client; the host of web.public_origin): None if fine.

    Python's resolver encodes a name with the idna codec, which refuses an empty label (as
    in `a..b` or `.`) or one of more than 63 characters with UnicodeError, not OSError, so a
    caller expecting network errors would not catch it (paho's network thread ends on it).
    The reason is said here, the same on every Python (the codec's own words differ: "label
    empty or too long" on 3.11, "label empty" or "label too long" on 3.13).
    """
    try:
        host.encode("idna")
    except UnicodeError as error:
        labels = host.split(".")
        if len(labels) > 1 and not labels[-1]:
            labels.pop()  # a name may end with a dot (the root)
        if any(not label for label in labels):
            reason = "an empty label"
        elif any(len(label) > MAX_LABEL for label in labels):
            reason = f"a label of more than {MAX_LABEL} characters"
        else:
            reason = str(error.__cause__ or error)
        return f"{host!r} is not a valid host name ({reason})"
    return None


def name_problem(name: str) -> str | None:
    """None for a name (as normal_host gives it) that a browser opens and the resolver looks
    up: host_name_problem's rule, and a name ending in a number is an IPv4 address."""
    problem = host_name_problem(name)
    if problem is not None:
        return problem
    if _NUMBER.fullmatch(name.rstrip(".").rpartition(".")[2]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            return f"{name!r} is not an IPv4 address"
    return None
