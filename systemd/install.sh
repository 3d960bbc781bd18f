#!/bin/sh
# Install edge-app as systemd services on Raspberry Pi OS, or remove them: edge-app.service
# (the door) and edge-app-hub.service (MQTT / Home Assistant). Other Debian-based systems
# also need a udev rule that gives the gpio group /dev/gpiochip* (docs/INSTALL.md).
# Safe to run again: existing config, keys and gallery are kept, the rest is refreshed, and
# services that are running are restarted on the new files. It never enables a unit: a first
# install prints the `systemctl enable --now` commands for after wiring and enrolment, and an
# upgrade leaves each unit enabled, disabled or masked as it was.
#
#   sudo systemd/install.sh                 install or upgrade from this checkout
#   sudo systemd/install.sh --no-apt        do not apt-get the Pi packages
#   sudo systemd/install.sh --no-venv       keep the existing Python environment as it is
#   sudo systemd/install.sh --uninstall     remove the program, units and udev rule; keep the
#                                           config, the gallery, the events, the user and
#                                           the units' drop-ins (systemctl edit)
#   sudo systemd/install.sh --uninstall --purge   also delete those (biometric data!)
#   systemd/install.sh --print-config [FILE]      print the config.toml a first install
#                                           writes (from FILE, by default this checkout's
#                                           config.example.toml); no root, changes nothing
set -eu
# Whatever umask sudo passes on, what is installed is readable (secrets set their own modes).
umask 022

SERVICE=edge-app
HUB_SERVICE=edge-app-hub
SERVICE_USER=edge-app
PREFIX=/opt/edge-app
# The program: $VENV is a link to one venv in $VENVS. An install builds a new venv beside
# the one in use and switches the link only once the new program has passed its checks.
VENV=$PREFIX/venv
VENVS=$PREFIX/venvs
# After a failed restart, a link to the previous program, kept with its models (models.old)
# until a run's restart succeeds.
WAY_BACK=$PREFIX/venv.previous
CONF_DIR=/etc/edge-app
STATE_DIR=/var/lib/edge-app
SHARE_DIR=/usr/share/edge-app
MODELS_DIR=$SHARE_DIR/models
DOC_DIR=/usr/share/doc/edge-app
UNIT=/etc/systemd/system/$SERVICE.service
HUB_UNIT=/etc/systemd/system/$HUB_SERVICE.service
UNLOCK_KEY=$CONF_DIR/unlock.key
RULE=/etc/udev/rules.d/99-coral-edgetpu.rules
LINK=/usr/local/bin/edge-app
LOGIN_DEFS=/etc/login.defs
LOCK_FILE=/run/edge-app-install.lock
REPO=$(cd "$(dirname "$0")/.." && pwd)

# commented_config EXAMPLE: the config.toml a first install writes, on standard output: the
# example with every setting commented out ("# key = value"), its comments, blank lines and
# [section] headers kept. The door then runs on the program's own defaults (the values
# shown), so a default that a later release re-tunes reaches it on upgrade; only what the
# operator un-comments is pinned. Every line of a value that spans lines (an array, a
# multi-line string) is commented too, and a line inside one is never taken for a header.
commented_config() {
    if [ ! -f "$1" ] || [ ! -r "$1" ]; then
        echo "install.sh: cannot read $1" >&2
        return 1
    fi
    cat <<'HEADER'
# This door's config, written by systemd/install.sh from config.example.toml with every
# setting commented out: the door runs on the defaults shown, and a default that a later
# release changes reaches this door when it is upgraded. To set a key, delete the "# " in
# front of it (it stays under its [section] line) and edit the value; only the keys you
# un-comment are pinned. After an upgrade, compare with the new example:
#   diff /etc/edge-app/config.toml <the checkout>/config.example.toml

HEADER
    # ml: the delimiter of the multi-line string the line ended inside ("" for none); depth:
    # the arrays still open. Strings and comments are skipped when counting brackets.
    awk '
    function scan(s,    i, n, c, q, extra) {
        n = length(s)
        i = 1
        while (i <= n) {
            if (ml != "") {
                if (ml == "\"\"\"" && substr(s, i, 1) == "\\") { i += 2; continue }
                if (substr(s, i, 3) == ml) {
                    q = substr(ml, 1, 1)
                    extra = 0
                    while (extra < 2 && substr(s, i + 3, 1) == q) { i++; extra++ }
                    i += 3
                    ml = ""
                    continue
                }
                i++
                continue
            }
            c = substr(s, i, 1)
            if (c == "#") return
            if (substr(s, i, 3) == "\"\"\"" || substr(s, i, 3) == "\047\047\047") {
                ml = substr(s, i, 3)
                i += 3
                continue
            }
            if (c == "\"") {
                i++
                while (i <= n && substr(s, i, 1) != "\"") {
                    if (substr(s, i, 1) == "\\") i++
                    i++
                }
                i++
                continue
            }
            if (c == "\047") {
                i++
                while (i <= n && substr(s, i, 1) != "\047") i++
                i++
                continue
            }
            if (c == "[") depth++
            else if (c == "]" && depth > 0) depth--
            i++
        }
    }
    BEGIN { ml = ""; depth = 0 }
    {
        if (ml == "" && depth == 0 && ($0 ~ /^[ \t]*(#|$)/ || $0 ~ /^[ \t]*\[/)) {
            print
            next
        }
        print "# " $0
        scan($0)
    }
    ' "$1"
}

if [ "${1:-}" = --print-config ]; then
    commented_config "${2:-$REPO/config.example.toml}"
    exit $?
fi

mode=install
purge=no
apt=yes
venv=yes
for arg in "$@"; do
    case $arg in
        --uninstall) mode=uninstall ;;
        --purge) purge=yes ;;
        --no-apt) apt=no ;;
        --no-venv) venv=no ;;
        -h | --help)
            sed -n '/^set -eu$/q; 2,$s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            echo "install.sh: unknown option $arg (see --help)" >&2
            exit 2
            ;;
    esac
done
if [ "$purge" = yes ] && [ "$mode" != uninstall ]; then
    echo "install.sh: --purge only goes with --uninstall (it deletes the config, the gallery," \
        "the events and the user); nothing done" >&2
    exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 $*)" >&2
    exit 1
fi

say() { echo "edge-app install: $*"; }
die() {
    echo "install.sh: $*" >&2
    exit 1
}
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# What a venv was installed from: a digest of the package's files and pyproject.toml in the
# checkout, written into each venv the installer builds (SOURCE_STAMP). `--no-venv` keeps the
# program only when it was installed from these very files: the units and models installed
# with it may need what an older program lacks (relay_off --after-stop in ExecStopPost=).
SOURCE_STAMP=edge-app-source.sha256
source_digest() {
    (cd "$1" && find edge_app pyproject.toml -type f ! -name '*.pyc' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

# lgpio_versions VENV: the version of each lgpio that pip installed into VENV itself (not
# apt's, which a venv made with --system-site-packages also sees), one a line, read from its
# metadata by the python3 that builds the venvs: VENV's own interpreter may be gone, or be
# a newer Python than its site-packages folder since a release upgrade. Fails, naming the
# folder, on an lgpio whose version cannot be read.
lgpio_versions() {
    for found in "$1"/lib/python3*/site-packages/lgpio-*.dist-info; do
        if [ ! -d "$found" ]; then continue; fi
        python3 -I -c '
import sys
from importlib.metadata import Distribution

try:
    version = Distribution.at(sys.argv[1]).version
except Exception:
    version = None
if not isinstance(version, str) or not version.strip():
    sys.exit(1)
print(version.strip())
' "$found" || {
            echo "install.sh: cannot read the version of lgpio in $found" >&2
            return 1
        }
    done
}

# What the EXIT trap reports: the step under way, once the installer has begun to change the
# system (a refusal before that has changed nothing), and what it leaves behind.
step=""
# yes while nothing but the new venv (removed on failure), apt packages, the service's
# account and groups and its folders were added, and an existing config's owner and mode fixed
untouched=no
snapshot=""
key_tmp=""
config_tmp=""
new_venv=""
staged_models=""
finish() {
    status=$?
    if [ -n "$key_tmp" ]; then rm -f "$key_tmp"; fi
    if [ -n "$config_tmp" ]; then rm -f "$config_tmp"; fi
    if [ -n "$snapshot" ]; then rm -rf "$snapshot"; fi
    if [ -n "$new_venv" ]; then rm -rf "$new_venv"; fi
    if [ -n "$staged_models" ]; then rm -rf "$staged_models"; fi
    if [ "$status" -ne 0 ] && [ -n "$step" ]; then
        echo "install.sh: FAILED while $step (exit status $status)." >&2
        if [ "$untouched" = yes ]; then
            echo "install.sh: the installed program, config, units and models are as they" \
                "were, and running services were not touched: fix the cause and run the" \
                "installer again" >&2
        else
            echo "install.sh: the system may be half-installed or half-upgraded (or" \
                "half-removed): fix the cause and run the installer again" >&2
        fi
    fi
    exit "$status"
}
trap finish EXIT
exit_on_signals() {
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
exit_on_signals

# The highest uid and gid of system accounts (login.defs, Debian's default otherwise).
login_def() {
    value=$(awk -v key="$1" '$1 == key { value = $2 } END { print value }' "$LOGIN_DEFS" \
        2>/dev/null || true)
    case $value in '' | *[!0-9]*) echo "$2" ;; *) echo "$value" ;; esac
}
SYS_UID_MAX=$(login_def SYS_UID_MAX 999)
SYS_GID_MAX=$(login_def SYS_GID_MAX 999)

# service_account ENTRY: whether a passwd line is an account like the one the installer
# makes: a system uid and no login shell. Sets uid, home and shell.
service_account() {
    IFS=: read -r _ _ uid _ _ home shell <<EOF
$1
EOF
    case $uid in '' | *[!0-9]*) return 1 ;; esac
    [ "$uid" -gt 0 ] && [ "$uid" -le "$SYS_UID_MAX" ] || return 1
    case $shell in */nologin | */false) return 0 ;; *) return 1 ;; esac
}

# An existing account or group named $SERVICE_USER is used only if it is what the installer
# would have made; a person's login would otherwise get the gpio and video groups, the
# config and the keys, and --purge would delete it. Checked before anything is changed.
check_account() {
    user_entry=$(getent passwd "$SERVICE_USER" || true)
    if [ -n "$user_entry" ] && ! service_account "$user_entry"; then
        die "an account named $SERVICE_USER exists (uid $uid, shell $shell) and is not a" \
            "system account without a login shell (uid 1-$SYS_UID_MAX, shell nologin or" \
            "false): not using it for the door; nothing changed. Rename or remove it, or" \
            "make it a system account (usermod --shell /usr/sbin/nologin), then run again"
    fi
    group_entry=$(getent group "$SERVICE_USER" || true)
    if [ -n "$user_entry" ] && [ -z "$group_entry" ]; then
        die "the account $SERVICE_USER exists but no group of that name: nothing changed;" \
            "create it (groupadd --system $SERVICE_USER; usermod -g $SERVICE_USER" \
            "$SERVICE_USER), then run again"
    fi
    if [ -n "$group_entry" ]; then
        IFS=: read -r _ _ gid members <<EOF
$group_entry
EOF
        case $gid in '' | *[!0-9]*) gid=-1 ;; esac
        others=$(echo "$members" | tr ',' '\n' | grep -vx -e "$SERVICE_USER" -e '' || true)
        if [ "$gid" -le 0 ] || [ "$gid" -gt "$SYS_GID_MAX" ] || [ -n "$others" ]; then
            die "a group named $SERVICE_USER exists (gid $gid, members: ${members:-none})" \
                "that is not a system group of the service alone: its members would read" \
                "the config; nothing changed. Remove it or its members, then run again"
        fi
    fi
}

uninstall() {
    step="uninstalling"
    if have_systemd; then
        systemctl disable --now "$HUB_SERVICE.service" 2>/dev/null || true
        systemctl disable --now "$SERVICE.service" 2>/dev/null || true
    fi
    rm -f "$UNIT" "$HUB_UNIT" "$RULE" "$LINK"
    rm -rf "$PREFIX" "$SHARE_DIR" "$DOC_DIR"
    dropins=""
    for folder in "$UNIT.d" "$HUB_UNIT.d"; do
        if [ -e "$folder" ] || [ -L "$folder" ]; then dropins="$dropins $folder"; fi
    done
    if [ "$purge" = yes ] && [ -n "$dropins" ]; then
        rm -rf "$UNIT.d" "$HUB_UNIT.d"
        say "removed the units' drop-ins:$dropins"
    elif [ -n "$dropins" ]; then
        say "kept the units' drop-ins (local settings):$dropins"
    fi
    if have_systemd; then
        systemctl daemon-reload
    fi
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules || true
    fi
    if [ "$purge" = yes ]; then
        rm -rf "$CONF_DIR" "$STATE_DIR"
        user="and the $SERVICE_USER user"
        entry=$(getent passwd "$SERVICE_USER" || true)
        if [ -z "$entry" ]; then
            user="(there was no $SERVICE_USER user)"
        elif service_account "$entry" && [ "$home" = "$STATE_DIR" ]; then
            userdel "$SERVICE_USER"
        else
            user="but kept the account $SERVICE_USER: it is not the system account the"
            user="$user installer makes (uid $uid, home $home, shell $shell); delete it yourself"
        fi
        say "removed, including $CONF_DIR, $STATE_DIR $user"
    else
        say "removed; kept $CONF_DIR, $STATE_DIR (gallery, events) and the $SERVICE_USER user" \
            "(--uninstall --purge deletes them)"
    fi
}

# check_secret FILE OWNER:GROUP MODE: an existing secret gets its owner and mode back (an
# edit as another user, an old installer or a restore can leave them wrong); a link or
# anything but a regular file is left alone with a warning.
check_secret() {
    if [ -L "$1" ] || [ ! -f "$1" ]; then
        say "WARNING: $1 is not a regular file: left as it is; check by hand that it is" \
            "owned by $2 with mode $3"
        return 0
    fi
    now=$(stat -c '%U:%G %a' "$1")
    if [ "$now" != "$2 $3" ]; then
        chown "$2" "$1"
        chmod "$3" "$1"
        say "fixed the owner and mode of $1: was $now, now $2 $3"
    fi
}

# The key that signs MQTT unlock commands (used only with mqtt.remote_unlock = true): 32
# random bytes as hex, readable by the service user alone. Written to a temporary file in
# the same folder, checked, given its owner and mode, and only then moved into place, so an
# interruption or a failing od never leaves an empty or root-owned key behind.
write_unlock_key() {
    rm -f "$CONF_DIR"/.unlock.key.new.*
    key_tmp=$(mktemp "$CONF_DIR/.unlock.key.new.XXXXXX")
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key_tmp"
    if ! LC_ALL=C grep -Eqx '[0-9a-f]{64}' "$key_tmp"; then
        die "could not make $UNLOCK_KEY: od gave no 64 hex digits from /dev/urandom"
    fi
    chown "$SERVICE_USER:$SERVICE_USER" "$key_tmp"
    chmod 0600 "$key_tmp"
    mv -f "$key_tmp" "$UNLOCK_KEY"
    key_tmp=""
}

# install_unit NAME DEST: a masked unit (DEST a link to /dev/null) stays masked and is not
# touched; one that was there keeps its enablement; a new one is only installed.
install_unit() {
    if [ -L "$2" ] && [ "$(readlink "$2")" = /dev/null ]; then
        say "$1.service is masked ($2 -> /dev/null): left masked and not updated" \
            "(systemctl unmask $1, then run the installer again)"
        masked_units="$masked_units $1.service"
        return 0
    fi
    if [ -e "$2" ] || [ -L "$2" ]; then
        kept_units="$kept_units $1.service"
    else
        new_units="$new_units $1.service"
    fi
    # Written beside it, then renamed over it: a power cut leaves the old unit or the new,
    # never a cut-short one (systemd loads no *.service.new).
    install -D -m 0644 "$REPO/systemd/$1.service" "$2.new"
    mv -f "$2.new" "$2"
}

# remove_unused_venvs [KEEP]: removes every venv in $VENVS but the one in use and KEEP.
remove_unused_venvs() {
    in_use=$(readlink -f "$VENV" 2>/dev/null || true)
    for built in "$VENVS"/*; do
        if [ -e "$built" ] || [ -L "$built" ]; then
            case $(readlink -f "$built") in
                "$in_use" | "${1:-$in_use}") ;;
                *) rm -rf "$built" ;;
            esac
        fi
    done
}

install_all() {
    # Checks first: a refusal here has changed nothing.
    if [ ! -f "$REPO/models/tflite/manifest.json" ]; then
        die "no models in $REPO/models/tflite (build them: make models)"
    fi
    if [ "$venv" = no ] && [ ! -x "$VENV/bin/edge-app" ]; then
        die "--no-venv keeps the existing Python environment, but $VENV has no edge-app" \
            "program: run without --no-venv; nothing changed"
    fi
    if [ "$venv" = no ] &&
        [ "$(cat "$VENV/$SOURCE_STAMP" 2>/dev/null)" != "$(source_digest "$REPO")" ]; then
        die "--no-venv keeps the installed program, but it was not installed from this" \
            "checkout's files (or by an older installer), and the units and models installed" \
            "with it may need what it lacks: run without --no-venv; nothing changed"
    fi
    check_account
    # A Raspberry Pi: apt's picamera2 and lgpio, PyPI's simplejpeg beside them, and the
    # check that the venv imports them all go together (an arm64 board of another make has
    # none of them from apt: checking their import there failed every install).
    pi_board=no
    if grep -qs "Raspberry Pi" /proc/device-tree/model; then pi_board=yes; fi

    # A run cut short between the two renames of the models' swap (below) left the
    # installed models only as models.discard (a run that kept a way back) or models.old:
    # put back first, so that a step failing before the swap (apt, pip) leaves them as they
    # were, as it then says.
    for aside in "$MODELS_DIR.discard" "$MODELS_DIR.old"; do
        if [ ! -e "$MODELS_DIR" ] && [ -d "$aside" ] && [ ! -L "$aside" ]; then
            step="putting back $MODELS_DIR, left as $aside by a run cut short"
            mv -T "$aside" "$MODELS_DIR"
            say "put back $MODELS_DIR, left as $aside by a run cut short"
        fi
    done
    # Likewise the program: a run cut short between the two renames that replace an older
    # installer's venv folder by the link (below) left it only as venv.old. Put back, it is
    # the program in use again: the new venv gets its lgpio, and it is removed only once the
    # services run on the new one (left there, no run ever removed it).
    if [ ! -e "$VENV" ] && [ ! -L "$VENV" ] && [ -d "$PREFIX/venv.old" ] &&
        [ ! -L "$PREFIX/venv.old" ]; then
        step="putting back $VENV, left as $PREFIX/venv.old by a run cut short"
        mv -T "$PREFIX/venv.old" "$VENV"
        say "put back $VENV, left as $PREFIX/venv.old by a run cut short"
    fi
    # The way back a run whose restart failed printed: $WAY_BACK links to the previous
    # program, and models.old holds its models. Both are kept, by every run, until a run's
    # restart succeeds, so a run that fails again still leaves that way back. Forgotten
    # once taken (the link in use is the program it names) or no longer whole.
    kept=""
    if [ -L "$WAY_BACK" ]; then
        kept=$(readlink -f "$WAY_BACK" 2>/dev/null || true)
        if [ ! -d "$kept" ] || [ "$kept" = "$(readlink -f "$VENV" 2>/dev/null || true)" ] ||
            [ ! -d "$MODELS_DIR.old" ] || [ -L "$MODELS_DIR.old" ]; then
            rm -f "$WAY_BACK"
            kept=""
        fi
    fi

    # From here until the config is written, a failure leaves the installed program, config,
    # units and models as they were (apt packages added are not a change of the door).
    untouched=yes
    if [ "$apt" = yes ] && command -v apt-get >/dev/null 2>&1; then
        step="installing Debian packages (apt-get)"
        packages="python3-venv"
        # The camera and GPIO bindings come from Raspberry Pi OS, not from PyPI.
        if [ "$pi_board" = yes ]; then
            packages="$packages python3-picamera2 python3-lgpio"
        fi
        say "apt-get install $packages"
        # shellcheck disable=SC2086  # a word list on purpose
        apt-get install -y --no-install-recommends $packages
    fi

    # Everything is installed from a fresh copy of the checkout as it is, local changes
    # included: pip builds in the folder it is given (build/, *.egg-info, root-owned in the
    # user's checkout) and reuses a build/lib left there, which keeps modules deleted since.
    # Hidden folders (.git, .venv, caches), build, dist, venv and *.egg-info are left out.
    checkout=$REPO # for the messages: REPO becomes the temporary copy, deleted at the end
    step="copying $REPO to a temporary folder"
    snapshot=$(mktemp -d)
    for entry in "$REPO"/*; do
        case ${entry##*/} in build | dist | venv | *.egg-info) continue ;; esac
        cp -R "$entry" "$snapshot/"
    done
    REPO=$snapshot

    # The program first: pip (which needs PyPI) is the step most likely to fail. It goes into
    # a new venv beside the one in use, which the running door and hub keep importing from
    # until the switch just before their restart: a failure anywhere before that switch
    # removes the new venv and leaves the installed program as it was.
    if [ "$venv" = yes ]; then
        step="installing edge-app into a new venv in $VENVS (pip)"
        install -d -m 0755 "$PREFIX" "$VENVS"
        # Venvs left by an install that was cut short (a power cut during pip) are never in
        # use, nor the way back.
        remove_unused_venvs "$kept"
        # lgpio that was pip-installed into the venv in use (docs/INSTALL.md: plain Debian
        # has no python3-lgpio): the new venv gets the same version, or the door cannot
        # drive its relay (and an upgrade never changes the version the operator chose).
        step="reading the version of the lgpio pip installed into $VENV"
        if ! venv_lgpio=$(lgpio_versions "$VENV"); then
            die "the venv in use has an lgpio of its own whose version cannot be read, so" \
                "the new venv could not get the same one: reinstall the version the door" \
                "should keep (sudo $VENV/bin/pip install --force-reinstall lgpio==VERSION)," \
                "then run the installer again"
        fi
        venv_lgpio=$(printf '%s\n' "$venv_lgpio" | sort -u)
        case $venv_lgpio in
            *"
"*)
                die "the venv in use has lgpio of its own for more than one Python, at" \
                    "versions $(printf '%s' "$venv_lgpio" | tr '\n' ' ') (in" \
                    "$(echo "$VENV"/lib/python3*/site-packages/lgpio-*.dist-info)): delete" \
                    "those of the Pythons it no longer runs ($VENV/bin/python --version" \
                    "says which it runs), then run the installer again"
                ;;
            *[!0-9A-Za-z.+!_-]*)
                die "the lgpio in the venv in use gives its version as '$venv_lgpio'," \
                    "which pip cannot install: reinstall the version the door should keep" \
                    "(sudo $VENV/bin/pip install --force-reinstall lgpio==VERSION), then" \
                    "run the installer again"
                ;;
        esac
        step="installing edge-app into a new venv in $VENVS (pip)"
        new_venv=$(mktemp -d "$VENVS/$(date -u +%Y%m%dT%H%M%SZ).XXXXXX")
        chmod 0755 "$new_venv"
        # --system-site-packages: picamera2 and lgpio are apt packages (their bindings are
        # not on PyPI).
        python3 -m venv --system-site-packages "$new_venv"
        "$new_venv/bin/pip" install --quiet "$REPO"
        source_digest "$REPO" >"$new_venv/$SOURCE_STAMP"
        if [ -n "$venv_lgpio" ]; then
            step="installing lgpio $venv_lgpio into $new_venv (pip), as in the venv in use"
            # --force-reinstall: pip would count an lgpio on the system path (apt's) as
            # already installed and put none into the new venv; --no-deps: it has none.
            if ! "$new_venv/bin/pip" install --quiet --force-reinstall --no-deps \
                "lgpio==$venv_lgpio"; then
                die "pip could not install lgpio $venv_lgpio, the version in the venv in use," \
                    "into the new venv (pip's message above). The installer does not take" \
                    "another version in its place: if PyPI could not be reached, run it" \
                    "again once it can; to move the door to another lgpio, install that" \
                    "version into the venv in use first (sudo $VENV/bin/pip install" \
                    "lgpio==VERSION), then run the installer again"
            fi
            new_lgpio=$(lgpio_versions "$new_venv" || true)
            if [ "$new_lgpio" != "$venv_lgpio" ]; then
                die "pip ended without an error, but $new_venv has no lgpio $venv_lgpio of" \
                    "its own (it has: $(printf '%s' "${new_lgpio:-none}" | tr '\n' ' ')): a pip" \
                    "setting may send it elsewhere (sudo pip config list, PIP_* variables);" \
                    "fix that, then run the installer again"
            fi
            say "installed lgpio $venv_lgpio from PyPI into $new_venv, as in the venv in use"
        fi
        say "installed edge-app into $new_venv"
        # picamera2 imports apt's python3-simplejpeg, which Bookworm builds for its numpy 1.x;
        # the venv has numpy 2 from PyPI, and with it `from picamera2 import Picamera2`
        # raises "ValueError: numpy.dtype size changed". PyPI's simplejpeg is built for
        # numpy 2, and installed into the venv it shadows apt's. --force-reinstall: pip
        # would count apt's copy as already installed; --no-deps: keep the venv's numpy.
        if [ "$pi_board" = yes ] && [ "$(uname -m)" = aarch64 ]; then
            "$new_venv/bin/pip" install --quiet --force-reinstall --no-deps simplejpeg
            say "installed simplejpeg from PyPI into $new_venv (apt's is built for numpy 1.x)"
        fi
        if [ ! -x "$new_venv/bin/edge-app" ]; then
            die "pip succeeded but $new_venv/bin/edge-app is not there"
        fi
        program=$new_venv
    else
        program=$VENV
    fi

    step="creating the groups and the $SERVICE_USER user"
    # The service's groups must exist, or systemd refuses to start it.
    for group in video gpio plugdev; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        if getent group "$SERVICE_USER" >/dev/null; then
            group_option="--gid $SERVICE_USER" # a system group of that name (check_account)
        else
            group_option="--user-group"
        fi
        # shellcheck disable=SC2086  # an option and its value
        useradd --system $group_option --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-app door service" "$SERVICE_USER"
        say "created user $SERVICE_USER"
    fi
    # Also for running `edge-app enroll` as this user by hand (the unit sets them itself).
    usermod -a -G video,gpio,plugdev "$SERVICE_USER"

    if [ "$venv" = yes ]; then
        # The venv's interpreter is the python3 first on root's PATH: a pyenv or conda one in
        # root's home, which the service user cannot run (the units would fail to start,
        # over and over), or a source-built one in /usr/local, which does not see apt's
        # picamera2 and lgpio (the strike's pin could not be driven).
        step="checking that $SERVICE_USER can run $program"
        modules=edge_app
        if [ "$pi_board" = yes ] && [ "$apt" = yes ]; then
            modules="edge_app, lgpio, picamera2"
        elif [ -n "$venv_lgpio" ]; then
            modules="edge_app, lgpio"
        fi
        # -I: the venv's modules only, not an edge_app in the folder the installer runs in.
        if ! runuser -u "$SERVICE_USER" -- "$program/bin/python" -I -c "import $modules" \
            2>/dev/null; then
            # Which one, and Python's own last line on it, for advice that fits the cause.
            failed=""
            error=""
            for module in $(printf '%s' "$modules" | tr ',' ' '); do
                if ! error=$(runuser -u "$SERVICE_USER" -- "$program/bin/python" -I -c \
                    "import $module" 2>&1 >/dev/null); then
                    failed=$module
                    break
                fi
                error=""
            done
            error=$(printf '%s\n' "$error" | grep -v '^[[:space:]]*$' | tail -n 1 || true)
            made_from=$(command -v python3 || true)
            debian_python="run the installer with Debian's python3:"
            debian_python="$debian_python sudo env PATH=/usr/sbin:/usr/bin:/sbin:/bin $0"
            if [ -z "$failed" ] || [ "$failed" = edge_app ]; then
                die "$SERVICE_USER cannot import ${failed:-$modules} with $program/bin/python" \
                    "(made from $made_from)${error:+: $error}; $debian_python"
            elif [ "$failed" = lgpio ] && [ -n "$venv_lgpio" ]; then
                die "$SERVICE_USER imports edge_app with $program/bin/python but not lgpio" \
                    "${venv_lgpio}, which pip installed into it as the venv in use has it" \
                    "(${error:-no error given}); without it the door cannot drive its relay." \
                    "The installer does not take another version in its place: install one" \
                    "that imports with $made_from into the venv in use (sudo $VENV/bin/pip" \
                    "install lgpio==VERSION), then run the installer again"
            elif [ "$(readlink -f "$made_from")" != "$(readlink -f /usr/bin/python3)" ]; then
                die "$SERVICE_USER imports edge_app with $program/bin/python but not" \
                    "$failed (${error:-no error given}): it comes from apt's" \
                    "python3-$failed, which only a venv made from Debian's python3 sees," \
                    "and this one was made from $made_from; $debian_python"
            else
                die "$SERVICE_USER imports edge_app with $program/bin/python but not" \
                    "$failed (${error:-no error given}), which comes from apt's" \
                    "python3-$failed: check that Debian's python3 imports it (sudo -u" \
                    "$SERVICE_USER /usr/bin/python3 -c 'import $failed'), reinstall it if not" \
                    "(sudo apt-get install --reinstall python3-$failed), then run the" \
                    "installer again"
            fi
        fi
    fi

    # The new models, staged beside the installed ones (removed on failure): the check of a
    # kept config below loads them with the new program, and they replace the installed
    # ones in one rename just before the restart.
    step="staging the new models in $MODELS_DIR.new"
    install -d -m 0755 "$SHARE_DIR"
    rm -rf "$MODELS_DIR.new" "$MODELS_DIR.discard"
    if [ -z "$kept" ]; then rm -rf "$MODELS_DIR.old"; fi
    staged_models=$MODELS_DIR.new
    cp -R "$REPO/models/tflite" "$staged_models"
    chmod -R u=rwX,go=rX "$staged_models"

    step="writing $CONF_DIR and $STATE_DIR"
    install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    if [ -e "$CONF_DIR/config.toml" ] || [ -L "$CONF_DIR/config.toml" ]; then
        say "kept existing $CONF_DIR/config.toml: the keys set in it stay as they are, and a" \
            "default this release changed applies only to keys it leaves out or commented;" \
            "compare: diff $CONF_DIR/config.toml $checkout/config.example.toml"
        check_secret "$CONF_DIR/config.toml" "root:$SERVICE_USER" 640
        # A key the new release refuses (a range narrowed, a key renamed), or models it
        # cannot run with the config, would stop the door at the restart below and keep it
        # restarting, locked: checked by the new program with the new models, as the service
        # user, before the units and models change or anything restarts.
        step="checking the kept $CONF_DIR/config.toml with the new program and models"
        if ! runuser -u "$SERVICE_USER" -- "$program/bin/edge-app" run --check-config \
            --config "$CONF_DIR/config.toml" --installed-models "$staged_models"; then
            die "$CONF_DIR/config.toml is not valid for this release (the problems are" \
                "above): fix them, then run the installer again, which checks it first." \
                "The installed program, the units, the models and the running services" \
                "were left as they were"
        fi
    else
        untouched=no
        # Written whole to a temporary file beside it, then moved into place: an interrupted
        # install never leaves a half config that the next run would keep.
        rm -f "$CONF_DIR"/.config.toml.new.*
        config_tmp=$(mktemp "$CONF_DIR/.config.toml.new.XXXXXX")
        commented_config "$REPO/config.example.toml" >"$config_tmp"
        chown "root:$SERVICE_USER" "$config_tmp"
        chmod 0640 "$config_tmp"
        mv -f "$config_tmp" "$CONF_DIR/config.toml"
        config_tmp=""
        say "wrote $CONF_DIR/config.toml with every setting commented out (the defaults):" \
            "un-comment and set [gpio] pin and active_high for your relay, and" \
            "[camera] source if not the Pi camera"
    fi
    untouched=no
    if [ -f "$UNLOCK_KEY" ] && [ ! -L "$UNLOCK_KEY" ] && [ ! -s "$UNLOCK_KEY" ]; then
        write_unlock_key
        say "replaced the empty $UNLOCK_KEY with a new key"
    elif [ -e "$UNLOCK_KEY" ] || [ -L "$UNLOCK_KEY" ]; then
        check_secret "$UNLOCK_KEY" "$SERVICE_USER:$SERVICE_USER" 600
    else
        write_unlock_key
        say "wrote $UNLOCK_KEY (the remote-unlock signing key; see HOME_ASSISTANT.md)"
    fi

    step="installing the docs, the udev rule and the units"
    ln -sf "$VENV/bin/edge-app" "$LINK"
    install -d -m 0755 "$DOC_DIR"
    # Every page: the installed ones link to each other (DAEMON.md to GALLERY.md, INSTALL.md).
    install -m 0644 "$REPO"/docs/*.md "$DOC_DIR/"
    install -D -m 0644 "$REPO/systemd/99-coral-edgetpu.rules" "$RULE"
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules || true
        udevadm trigger --subsystem-match=usb --subsystem-match=apex || true
    fi
    new_units=""
    kept_units=""
    masked_units=""
    install_unit "$SERVICE" "$UNIT"
    install_unit "$HUB_SERVICE" "$HUB_UNIT"

    # The new program, then the models, just before the restart, so that new models never
    # run with the previous program. The link is replaced in one rename, so $VENV is always
    # a whole venv, the old one or the new one; the models are replaced as a whole, so a
    # rebuilt set never mixes with the previous one. A HUP, INT or TERM (an ssh session
    # dropped, a Ctrl-C) is ignored from the first rename to the last, by the renames too:
    # it would leave the new program with the previous models, or no models at all.
    previous=$kept # the program the way back goes to, if the restart fails
    # The models the swap moves aside: models.old, kept for the way back until the
    # services run on the new ones, unless it holds a way back kept already.
    aside=$MODELS_DIR.old
    if [ -n "$kept" ]; then aside=$MODELS_DIR.discard; fi
    trap '' HUP INT TERM
    if [ "$venv" = yes ]; then
        step="switching $VENV to the new program"
        if [ -z "$previous" ]; then previous=$(readlink -f "$VENV" 2>/dev/null || true); fi
        if [ -d "$VENV" ] && [ ! -L "$VENV" ]; then
            # An older installer's venv, a folder: a link cannot replace it in one step.
            rm -rf "$PREFIX/venv.old"
            mv "$VENV" "$PREFIX/venv.old"
            previous=$PREFIX/venv.old
        fi
        rm -f "$PREFIX/venv.new"
        ln -s "$new_venv" "$PREFIX/venv.new"
        mv -T "$PREFIX/venv.new" "$VENV"
        new_venv=""
    fi
    step="replacing the models in $MODELS_DIR"
    if [ -e "$MODELS_DIR" ]; then mv -T "$MODELS_DIR" "$aside"; fi
    mv -T "$staged_models" "$MODELS_DIR"
    staged_models=""
    exit_on_signals
    if [ "$venv" = yes ]; then say "$VENV is now $(readlink -f "$VENV")"; fi
    say "models in $MODELS_DIR"
    rm -rf "$MODELS_DIR.discard"

    step="reloading systemd and restarting the running services"
    restart_failed=no
    if have_systemd; then
        systemctl daemon-reload
        # An upgrade has replaced the program, models and units under running services:
        # restart those that run. Stopped ones stay stopped, and no unit is enabled here.
        # shellcheck disable=SC2086  # a word list on purpose
        if [ -n "$kept_units" ] && ! systemctl try-restart $kept_units; then
            restart_failed=yes
        fi
        for unit in $kept_units; do
            state=$(systemctl is-enabled "$unit" 2>/dev/null || true)
            say "$unit: left ${state:-as it was} (the installer does not enable units)"
        done
    else
        say "systemd is not running here: nothing reloaded or restarted"
    fi
    if [ "$restart_failed" = yes ]; then
        # The door that failed to start is locked (ExecStartPre= and ExecStopPost= drive the
        # pin low); the previous program and its models are kept for going back by hand.
        step="restarting the services on the new release"
        back=""
        if [ -n "$previous" ] && [ -d "$previous" ] &&
            [ "$previous" != "$(readlink -f "$VENV")" ]; then
            # Kept by the next runs too, until one's restart succeeds (a link written
            # beside it, then renamed over it).
            rm -f "$WAY_BACK.new"
            ln -s "$previous" "$WAY_BACK.new"
            mv -T "$WAY_BACK.new" "$WAY_BACK"
            # The link in use is replaced by a rename as above: a power cut while going
            # back leaves it a whole venv, never missing.
            back="; the previous program is kept in $previous: to go back to it,"
            back="$back sudo ln -sfn $previous $PREFIX/venv.new"
            back="$back && sudo mv -T $PREFIX/venv.new $VENV"
            if [ -d "$MODELS_DIR.old" ]; then
                back="$back && sudo mv -T $MODELS_DIR $MODELS_DIR.new"
                back="$back && sudo mv -T $MODELS_DIR.old $MODELS_DIR"
            fi
            back="$back && sudo systemctl restart$kept_units"
        fi
        die "a service failed to restart on the new release: see journalctl -u $SERVICE" \
            "-u $HUB_SERVICE$back"
    fi
    # The previous models and program, once the services run on the new ones: only a venv
    # this installer made (never what a hand-made link pointed at). The way back goes first:
    # cut short after it, the next run removes what it named as any venv not in use.
    step="removing the previous models ($MODELS_DIR.old)"
    rm -f "$WAY_BACK"
    rm -rf "$MODELS_DIR.old"
    case $previous in
        "$VENVS"/*/* | *..*) ;;
        "$VENVS"/* | "$PREFIX/venv.old")
            if [ "$previous" != "$(readlink -f "$VENV")" ]; then
                step="removing the previous program ($previous)"
                rm -rf "$previous"
            fi
            ;;
    esac
    # and the program whose restart failed before, which the way back outlived
    if [ "$venv" = yes ]; then remove_unused_venvs; fi
    step=""

    # The first-install steps, unless this is an upgrade of a door already set up: its units
    # were there and it has a gallery.
    if [ -z "$new_units" ] && [ -e "$STATE_DIR/gallery.db" ]; then
        say "done: upgraded in place; the config, keys and gallery are kept, and each unit" \
            "is enabled or disabled as before (first-install steps: $DOC_DIR/INSTALL.md, section 6)"
    else
        cat <<EOF
edge-app install: done. Next:
  1. wire the relay ($DOC_DIR/WIRING.md), then in $CONF_DIR/config.toml, under [gpio],
     un-comment and set pin and active_high as WIRING.md says for your board: the default
     active_high = true holds the strike of a board that switches on a low input (most
     "active-low" modules) open for as long as the door runs; such a board needs false
  2. enrol people as the service user, so the daemon can read the gallery. That user must
     read the photos too, and they are biometric data: copy them, as that user, into a
     private folder of its own (never with a root cp, install or chown in $STATE_DIR)
       sudo -u $SERVICE_USER mkdir -p -m 0700 $STATE_DIR/photos
       sudo -u $SERVICE_USER mkdir -p -m 0700 $STATE_DIR/photos/alice
       for f in alice-*.jpg; do sudo -u $SERVICE_USER tee "$STATE_DIR/photos/alice/\$f" <"\$f" >/dev/null; done
       sudo -u $SERVICE_USER $LINK enroll --db $STATE_DIR/gallery.db "Alice" $STATE_DIR/photos/alice/
     (the gallery keeps what it needs, embeddings only: then delete the photos)
       sudo -u $SERVICE_USER rm -r $STATE_DIR/photos/alice
  3. check, then test the wiring before trusting it (WIRING.md, "Test it before trusting
     it": strike, service stopped and started, a pulse, a kill, a power cut, a boot):
       sudo -u $SERVICE_USER $LINK doctor
  4. start the door, and at every boot from now on (the installer enables no unit):
       sudo systemctl enable --now $SERVICE.service && journalctl -u $SERVICE
  5. optional, Home Assistant: fill [mqtt] in $CONF_DIR/config.toml (docs: $DOC_DIR/HOME_ASSISTANT.md),
     then sudo systemctl enable --now $HUB_SERVICE.service && journalctl -u $HUB_SERVICE
EOF
    fi
    if [ -n "$masked_units" ]; then
        say "masked, so not updated:$masked_units"
    fi
}

# One run at a time: two at once would build, switch and remove venvs under each other.
# The lock is one file for every checkout's installer (in /run, root's alone), held until
# the run ends (descriptor 9, closed at exit).
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$LOCK_FILE"
    flock -n 9 || die "another run of the installer is under way: wait for it to end;" \
        "nothing changed"
fi

if [ "$mode" = uninstall ]; then
    uninstall
else
    install_all
fi
