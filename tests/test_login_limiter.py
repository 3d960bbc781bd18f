"""The admin password's rate limit (edge_app.web.auth.LoginLimiter): brute force stays slow,
yet failures, however many and from wherever, never keep the owner out for long.

Unit tests drive the limiter with a clock of their own; the page tests go through the real
app (uvicorn on a loopback port, httpx clients, some bound to other loopback addresses so the
page sees several clients).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from test_web import Site, serve
from web_support import PASSWORD, csrf_of, unlock_fields

from edge_app.web import auth
from edge_app.web.app import DOOR_DOWN_AFTER

OWNER = "10.0.0.1"
DEVICE_COOKIE = "edge_door_device"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _by_address(address: str, wait: int) -> str:
    return f"too many failed logins from {address}; try again in {wait} s"


def _by_door(wait: int) -> str:
    return f"too many failed logins on this door recently; try again in {wait} s"


# --- the limiter -------------------------------------------------------------------------------


def test_an_address_past_its_limit_still_gets_a_check_every_backoff() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER) is None
    for backoff in (2, 4, 8, 16, 32, 60, 60, 60):
        assert limiter.attempt(OWNER) == _by_address(OWNER, backoff)
        clock.now += backoff - 0.5
        assert limiter.attempt(OWNER) == _by_address(OWNER, 1)  # never "0 s"
        clock.now += 0.5
        assert limiter.attempt(OWNER) is None  # one check, the owner's or an attacker's
    limiter.succeeded(OWNER)  # that check was the right password: the address starts over
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER) is None


def test_the_door_past_its_limit_still_gets_a_check_every_backoff() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    for number in range(auth.GLOBAL_FAILURES):
        assert limiter.attempt(f"10.1.{number}.1") is None
    assert limiter.attempt("10.2.0.1") == _by_door(2)
    clock.now += 2
    assert limiter.attempt("10.2.0.1") is None
    assert limiter.attempt("10.2.0.2") == _by_door(4)
    clock.now += 4
    assert limiter.attempt("10.2.0.2") is None


def test_parallel_requests_at_the_end_of_a_backoff_get_one_check() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER) is None
    clock.now += 2  # the backoff has passed: one check is due, and only one
    start = threading.Barrier(16)

    def burst(_: int) -> list[str | None]:
        start.wait()
        return [limiter.attempt(OWNER) for _ in range(5)]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(burst, range(16)) for a in batch]
    assert answers.count(None) == 1
    assert set(answers) - {None} == {_by_address(OWNER, 4)}


def _checks_per_hour(
    address_of: Callable[[int], str], device: bool = False
) -> tuple[list[int], float]:
    """An attacker asking every 0.25 s for two hours: the checks it got in each hour, and the
    longest it waited between two of them. With `device`, each check shows the same valid
    device cookie (a stolen one)."""
    clock = Clock(0.0)
    limiter = auth.LoginLimiter(clock=clock)
    known = limiter.device(limiter.trust_device()) if device else None
    times: list[float] = []
    for tick in range(2 * 3600 * 4):
        clock.now = tick / 4
        address = address_of(tick)
        refused = limiter.attempt(address, device=known) if known else limiter.attempt(address)
        if refused is None:
            times.append(clock.now)
    hours = [sum(1 for t in times if hour * 3600 <= t < (hour + 1) * 3600) for hour in (0, 1)]
    return hours, max(b - a for a, b in zip(times[:-1], times[1:], strict=True))


def test_an_attacker_gets_at_most_the_documented_checks_per_hour() -> None:
    # The figures of auth.py's comment and docs/WEB.md ("Security defaults", row "Login rate
    # limit").
    per_address, longest = _checks_per_hour(lambda tick: OWNER)
    assert per_address == [5 + 4 + 59, 60]
    assert longest == auth.BACKOFF_MAX_S  # nobody at that address waits longer for a check
    door, longest = _checks_per_hour(
        lambda tick: f"10.{tick // 65536}.{tick // 256 % 256}.{tick % 256}"
    )
    assert door == [30 + 4 + 59, 60]
    assert longest == auth.BACKOFF_MAX_S


def test_a_stolen_device_cookie_gets_no_more_checks_than_an_address() -> None:
    # From one address, or from a new address for every check: the device's counter backs off.
    for address_of in (
        lambda tick: OWNER,
        lambda tick: f"10.{tick // 65536}.{tick // 256 % 256}.{tick % 256}",
    ):
        per_device, longest = _checks_per_hour(address_of, device=True)
        assert per_device == [5 + 4 + 59, 60]
        assert longest == auth.BACKOFF_MAX_S


def test_an_address_that_logged_in_is_counted_on_its_own() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    assert limiter.attempt(OWNER) is None
    limiter.succeeded(OWNER)
    for number in range(auth.GLOBAL_FAILURES):  # a flood from everywhere else
        assert limiter.attempt(f"10.1.{number}.1") is None
    assert limiter.attempt("10.2.0.1") == _by_door(2)
    assert limiter.attempt(OWNER) is None  # the owner's address still gets its own checks
    clock.now += auth.TRUSTED_ADDRESS_S + 1  # trusted for 30 days after its right password
    for number in range(auth.GLOBAL_FAILURES):
        assert limiter.attempt(f"10.3.{number}.1") is None
    assert limiter.attempt(OWNER) == _by_door(2)


def test_a_logged_in_sessions_check_is_counted_for_that_session_only() -> None:
    limiter = auth.LoginLimiter(clock=Clock())
    for number in range(auth.GLOBAL_FAILURES):
        assert limiter.attempt(OWNER if number < 5 else f"10.1.{number}.1") is None
    assert limiter.attempt(OWNER) is not None  # the address and the door are both spent
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER, session="s1") is None
    refused = limiter.attempt(OWNER, session="s1")
    assert refused == "too many wrong passwords in this session; try again in 2 s"
    assert limiter.attempt(OWNER, session="s2") is None  # another session: its own count


def test_a_trusted_devices_check_is_counted_for_that_device_only() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    cookie = limiter.trust_device()
    device = limiter.device(cookie)
    assert device is not None and cookie.startswith(device + ".")
    for number in range(auth.GLOBAL_FAILURES):
        assert limiter.attempt(OWNER if number < 5 else f"10.1.{number}.1") is None
    assert limiter.attempt(OWNER) is not None  # the address and the door are both spent
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER, device=device) is None
    for backoff in (2, 4, 8, 16, 32, 60, 60):  # its own failures back off as an address's
        refused = limiter.attempt(OWNER, device=device)
        assert refused == f"too many wrong passwords from this browser; try again in {backoff} s"
        clock.now += backoff
        assert limiter.attempt(OWNER, device=device) is None
    limiter.succeeded(OWNER, device=device)  # the right password clears the device's counter
    for _ in range(auth.PER_ADDRESS_FAILURES):
        assert limiter.attempt(OWNER, device=device) is None
    another = limiter.device(limiter.trust_device())
    assert another is not None and limiter.attempt(OWNER, device=another) is None


def test_a_device_cookie_not_made_here_or_forgotten_is_none() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock=clock)
    cookie = limiter.trust_device()
    device, _, tag = cookie.partition(".")
    assert limiter.device(cookie) == device
    flip = {"A": "B"}.get(device[0], "A")
    for forged in (
        None,
        "",
        device,  # no tag
        device + ".",
        f"{flip}{device[1:]}.{tag}",  # another id, the same tag
        f"{device}.{tag[:-1]}",  # a tag cut short
        f"{device}.{tag}x",
        f"{device}.{tag.upper()}",
        auth.LoginLimiter().trust_device(),  # another process's key (a hub restart)
        f"{device}.{tag}" + "=" * 300,  # overlong
        "\u00e9." + tag,
    ):
        assert limiter.device(forged) is None, forged
    previous = cookie
    cookie = limiter.trust_device(device)  # the next login: a new device replaces it
    assert limiter.device(previous) is None and limiter.device(cookie) is not None
    clock.now += auth.TRUSTED_ADDRESS_S + 1  # remembered for 30 days after its login
    assert limiter.device(cookie) is None


def test_the_devices_remembered_are_bounded_least_recently_used_first() -> None:
    limiter = auth.LoginLimiter(clock=Clock())
    oldest, used = limiter.trust_device(), limiter.trust_device()
    others = [limiter.trust_device() for _ in range(auth.MAX_TRUSTED_DEVICES - 2)]
    assert all(limiter.device(c) is not None for c in [oldest, used, *others])
    assert limiter.device(used) is not None  # presented at a login: the most recently used
    newest = limiter.trust_device()
    assert limiter.device(oldest) is None  # pushed out by the newest
    assert all(limiter.device(c) is not None for c in [used, newest, *others[1:]])
    limiter.trust_device()
    assert limiter.device(others[0]) is None  # the least recently used by then
    assert len(limiter._devices) == auth.MAX_TRUSTED_DEVICES == auth.MAX_TRUSTED_ADDRESSES


# --- through the page --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    served = serve(tmp_path_factory.mktemp("limiter"))
    try:
        yield served
    finally:
        served.server.stop()


def _limiter(
    site: Site, per_address: int = auth.PER_ADDRESS_FAILURES, overall: int = auth.GLOBAL_FAILURES
) -> Clock:
    """The page's limiter, new, with a clock the test moves."""
    clock = Clock()
    site.server.app.state.web.limiter = auth.LoginLimiter(per_address, overall, clock=clock)
    return clock


def _from(site: Site, address: str) -> httpx.Client:
    """A client the page sees at `address` (another loopback address of this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=site.url, timeout=30.0, transport=transport)


def _log_in(client: httpx.Client, password: str) -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login", data={"password": password, "csrf_token": token}, follow_redirects=False
    )


def test_the_owner_logs_in_once_the_backoff_has_passed(site: Site) -> None:
    clock = _limiter(site)
    with site.client() as attacker, site.client() as owner:  # the same address: 127.0.0.1
        for _ in range(auth.PER_ADDRESS_FAILURES + 3):
            assert _log_in(attacker, "guess").status_code in (401, 429)
        refused = _log_in(owner, PASSWORD)
        assert refused.status_code == 429
        assert _by_address("127.0.0.1", 2) in refused.text
        clock.now += 2
        reply = _log_in(owner, PASSWORD)
        assert reply.status_code == 303 and reply.headers["location"] == "/"
        assert owner.get("/events", follow_redirects=False).status_code == 200
        # The right password cleared the address: it has its free checks again.
        for _ in range(auth.PER_ADDRESS_FAILURES):
            assert _log_in(attacker, "guess").status_code == 401


def test_a_flood_from_other_addresses_cannot_keep_the_owner_out(site: Site) -> None:
    _limiter(site, per_address=2, overall=4)
    with site.client() as owner:
        assert _log_in(owner, PASSWORD).status_code == 303  # the owner's address, once
        owner.cookies.clear()  # the session is gone (expired, logged out, another browser)
        for number in (2, 3):
            with _from(site, f"127.0.0.{number}") as attacker:
                for _ in range(2):
                    assert _log_in(attacker, "guess").status_code == 401
        with _from(site, "127.0.0.9") as newcomer:  # the door's 4 are spent: it waits
            refused = _log_in(newcomer, PASSWORD)
        assert refused.status_code == 429 and _by_door(2) in refused.text
        reply = _log_in(owner, PASSWORD)
        assert reply.status_code == 303 and reply.headers["location"] == "/"


def _device_set(reply: httpx.Response) -> str:
    """The device cookie's value a response sets (a login does, once)."""
    values = [
        line.split(";", 1)[0].partition("=")[2]
        for line in reply.headers.get_list("set-cookie")
        if line.startswith(f"{DEVICE_COOKIE}=")
    ]
    assert len(values) == 1, reply.headers.get_list("set-cookie")
    return values[0]


def _with_device(site: Site, cookie: str, password: str = PASSWORD) -> httpx.Response:
    """A login from a browser that shows this device cookie."""
    with site.client() as browser:
        browser.cookies.set(DEVICE_COOKIE, cookie)
        return _log_in(browser, password)


def _flood(site: Site) -> None:
    """Wrong passwords from the page's address (127.0.0.1) until it has no check left now."""
    with site.client() as attacker:
        for _ in range(auth.PER_ADDRESS_FAILURES):
            assert _log_in(attacker, "guess").status_code == 401
        assert _log_in(attacker, "guess").status_code == 429


def test_a_forged_or_changed_device_cookie_is_ignored(site: Site) -> None:
    _limiter(site)  # a stopped clock: no backoff passes
    with site.client() as owner:
        cookie = _device_set(_log_in(owner, PASSWORD))
    _flood(site)
    device, _, tag = cookie.partition(".")
    flip = {"A": "B"}.get(device[0], "A")
    for forged in (
        f"{flip}{device[1:]}.{tag}",  # another id under this one's tag
        f"{device}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}",  # a changed tag
        device,  # the id without its tag
        "forged.cookie",
        auth.LoginLimiter().trust_device(),  # made under another key (before a restart)
        cookie + "x" * 300,
    ):
        refused = _with_device(site, forged)  # as if there were no cookie: the address's turn
        assert refused.status_code == 429, (forged, refused.text)
        assert _by_address("127.0.0.1", 2) in refused.text
        assert 'name="password"' in refused.text  # the login form again, not an error page
    reply = _with_device(site, cookie)  # the real one: its own counter, at once
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    renewed = _device_set(reply)  # each login replaces the browser's device
    assert renewed != cookie
    assert _with_device(site, cookie).status_code == 429  # a copy of the old one is worthless
    assert _with_device(site, renewed).status_code == 303


def test_a_new_password_ends_the_trust_the_old_one_gave(site: Site) -> None:
    """Found by a review: a browser (or address) that logged in with a password kept its own
    counter after `hub passwd` replaced it, as long as 30 days: who logged in with a leaked
    password 32 times kept 32 devices' checks at the new one, none counted for the door."""
    _limiter(site)  # a stopped clock: no backoff passes
    with site.client() as intruder:
        cookie = _device_set(_log_in(intruder, PASSWORD))  # with the leaked password
    _flood(site)
    assert _with_device(site, cookie, "guess").status_code == 401  # its own counter: checked
    auth.write_password_file(site.config.web.password_file, "the password after the leak")
    try:
        refused = _with_device(site, cookie, "guess")  # the address's counter, spent
        assert refused.status_code == 429, refused.text
        assert _by_address("127.0.0.1", 2) in refused.text
    finally:
        auth.write_password_file(site.config.web.password_file, PASSWORD)


def test_addresses_and_devices_trusted_with_a_password_are_forgotten_with_it() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(per_address=1, overall=1, clock=clock)
    limiter.password_is("first hash")
    assert limiter.attempt(OWNER) is None
    limiter.succeeded(OWNER)
    cookie = limiter.trust_device()
    device = limiter.device(cookie)
    limiter.password_is(None)  # the file could not be read: nothing is known to have changed
    limiter.password_is("first hash")  # the same password: the trust stays
    assert device is not None and limiter.device(cookie) == device
    assert limiter.attempt("10.0.0.2") is None  # the door's one free check
    assert limiter.attempt(OWNER) is None  # the trusted owner: not counted for the door
    limiter.password_is("second hash")
    assert limiter.device(cookie) is None
    clock.now += auth.QUIET_S + 1  # every counter starts over
    assert limiter.attempt("10.0.0.2") is None
    assert limiter.attempt(OWNER) == _by_door(2)  # the owner's address counts for the door again


def test_the_page_remembers_the_latest_devices_only(site: Site) -> None:
    _limiter(site)
    limiter = site.server.app.state.web.limiter
    with site.client() as owner:
        cookie = _device_set(_log_in(owner, PASSWORD))
    _flood(site)
    for _ in range(auth.MAX_TRUSTED_DEVICES - 1):  # other browsers logged in since
        limiter.trust_device()
    reply = _with_device(site, cookie)  # the oldest of 32: still remembered
    assert reply.status_code == 303
    cookie = _device_set(reply)  # now the newest
    for _ in range(auth.MAX_TRUSTED_DEVICES):
        limiter.trust_device()
    assert len(limiter._devices) == auth.MAX_TRUSTED_DEVICES
    refused = _with_device(site, cookie)  # forgotten: the address's counter, spent
    assert refused.status_code == 429 and _by_address("127.0.0.1", 2) in refused.text


def test_the_device_cookie_is_strict_httponly_for_the_login_only_for_30_days(site: Site) -> None:
    _limiter(site)
    with site.client() as owner:
        reply = _log_in(owner, PASSWORD)
        assert reply.status_code == 303
        lines = reply.headers.get_list("set-cookie")
        assert [line.split("=", 1)[0] for line in lines] == ["edge_door_session", DEVICE_COOKIE]
        attributes = sorted(part.strip() for part in lines[1].split(";")[1:])
        # Plain HTTP, as the session cookie: no Secure (see test_web_proxy.py for https).
        assert attributes == ["HttpOnly", "Max-Age=2592000", "Path=/login", "SameSite=strict"]
        assert auth.TRUSTED_ADDRESS_S == 2592000
        # The browser sends it to the login form only, and logging out does not delete it.
        token = csrf_of(owner.get("/people").text)
        logout = owner.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        assert DEVICE_COOKIE not in logout.headers.get("set-cookie", "")
        sent = owner.build_request("GET", "/login").headers.get("cookie", "")
        assert f"{DEVICE_COOKIE}=" in sent
        assert "cookie" not in owner.build_request("GET", "/people").headers


def _unlock(client: httpx.Client, site: Site, password: str, reason: str) -> httpx.Response:
    data = {"password": password, "reason": reason, **unlock_fields(client)}
    return client.post("/unlock", data=data)


def test_failed_logins_from_the_owners_address_do_not_block_the_owners_unlock(
    site: Site,
) -> None:
    _limiter(site)
    with site.client() as owner, site.client() as attacker:
        site.login(owner)
        for _ in range(auth.PER_ADDRESS_FAILURES + 2):
            assert _log_in(attacker, "guess").status_code in (401, 429)
        reply = _unlock(owner, site, PASSWORD, "parcel delivery")
    # The password passed; the door (none in this test) is what could not unlock.
    assert reply.status_code == 502 and DOOR_DOWN_AFTER in reply.text, reply.text


def test_an_unlock_reason_is_refused_before_the_password_is_checked(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    _limiter(site)
    state = site.server.app.state.web
    checked: list[str] = []
    verify = state.password.verify

    def counted(password: str) -> bool:
        checked.append(password)
        return verify(password)

    with site.client() as owner:
        site.login(owner)
        monkeypatch.setattr(state.password, "verify", counted)
        for password in ("wrong guess", PASSWORD):
            for reason in ("parcel\u200bdelivery", "x" * 201, "bell\x07"):
                reply = _unlock(owner, site, password, reason)
                assert reply.status_code == 400, reply.text
                assert "The reason must be printable and at most 200 characters." in reply.text
                assert "Wrong password" not in reply.text
        assert checked == []  # no check ran, so none was counted either
        for _ in range(auth.PER_ADDRESS_FAILURES):
            assert _unlock(owner, site, "wrong guess", "parcel").status_code == 401
    assert len(checked) == auth.PER_ADDRESS_FAILURES
