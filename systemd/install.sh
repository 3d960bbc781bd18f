#!/bin/sh
# Install edge-app as systemd services on Raspberry Pi OS, or remove them: edge-app.service
# (the door) and edge-app-hub.service (MQTT / Home Assistant). Other Debian-based systems
# also need a udev rule that gives the gpio group /dev/gpiochip* (docs/INSTALL.md).
# Safe to run again: existing config, keys and gallery are kept, the rest is refreshed, and
# services that are running are restarted on the new files.
#
#   sudo systemd/install.sh                 install or upgrade from this checkout
#   sudo systemd/install.sh --no-apt        do not apt-get the Pi packages
#   sudo systemd/install.sh --no-venv       keep the existing Python environment as it is
#   sudo systemd/install.sh --uninstall     remove the program, units and udev rule; keep the
#                                           config, the gallery, the events and the user
#   sudo systemd/install.sh --uninstall --purge   also delete those (biometric data!)
set -eu

SERVICE=edge-app
HUB_SERVICE=edge-app-hub
SERVICE_USER=edge-app
PREFIX=/opt/edge-app
VENV=$PREFIX/venv
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
REPO=$(cd "$(dirname "$0")/.." && pwd)

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
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install.sh: unknown option $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 $*)" >&2
    exit 1
fi

say() { echo "edge-app install: $*"; }
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

uninstall() {
    if have_systemd; then
        systemctl disable --now "$HUB_SERVICE.service" 2>/dev/null || true
        systemctl disable --now "$SERVICE.service" 2>/dev/null || true
    fi
    rm -f "$UNIT" "$HUB_UNIT" "$RULE" "$LINK"
    rm -rf "$PREFIX" "$SHARE_DIR" "$DOC_DIR"
    if have_systemd; then
        systemctl daemon-reload
    fi
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules || true
    fi
    if [ "$purge" = yes ]; then
        rm -rf "$CONF_DIR" "$STATE_DIR"
        if getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER"
        fi
        say "removed, including $CONF_DIR, $STATE_DIR and the $SERVICE_USER user"
    else
        say "removed; kept $CONF_DIR, $STATE_DIR (gallery, events) and the $SERVICE_USER user" \
            "(--uninstall --purge deletes them)"
    fi
}

install_all() {
    if [ ! -f "$REPO/models/tflite/manifest.json" ]; then
        echo "install.sh: no models in $REPO/models/tflite (build them: make models)" >&2
        exit 1
    fi

    if [ "$apt" = yes ] && command -v apt-get >/dev/null 2>&1; then
        packages="python3-venv"
        # The camera and GPIO bindings come from Raspberry Pi OS, not from PyPI.
        if grep -qs "Raspberry Pi" /proc/device-tree/model; then
            packages="$packages python3-picamera2 python3-lgpio"
        fi
        say "apt-get install $packages"
        # shellcheck disable=SC2086  # a word list on purpose
        apt-get install -y --no-install-recommends $packages
    fi

    # The service's groups must exist, or systemd refuses to start it.
    for group in video gpio plugdev; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-app door service" "$SERVICE_USER"
        say "created user $SERVICE_USER"
    fi
    # Also for running `edge-app enroll` as this user by hand (the unit sets them itself).
    usermod -a -G video,gpio,plugdev "$SERVICE_USER"

    install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    if [ -e "$CONF_DIR/config.toml" ]; then
        say "kept existing $CONF_DIR/config.toml"
    else
        install -m 0640 -o root -g "$SERVICE_USER" "$REPO/config.example.toml" \
            "$CONF_DIR/config.toml"
        say "wrote $CONF_DIR/config.toml (edit gpio.pin and camera.source)"
    fi

    # Models: replaced as a whole, so a rebuilt set never mixes with the previous one.
    install -d -m 0755 "$SHARE_DIR"
    rm -rf "$MODELS_DIR.new"
    cp -R "$REPO/models/tflite" "$MODELS_DIR.new"
    chmod -R u=rwX,go=rX "$MODELS_DIR.new"
    rm -rf "$MODELS_DIR"
    mv "$MODELS_DIR.new" "$MODELS_DIR"
    say "models in $MODELS_DIR"

    if [ "$venv" = yes ]; then
        # --system-site-packages: picamera2 and lgpio are apt packages (their bindings are
        # not on PyPI).
        if [ ! -x "$VENV/bin/python" ]; then
            python3 -m venv --system-site-packages "$VENV"
        fi
        "$VENV/bin/pip" install --quiet --upgrade "$REPO"
        say "installed edge-app into $VENV"
        # picamera2 imports apt's python3-simplejpeg, which Bookworm builds for its numpy 1.x;
        # the venv has numpy 2 from PyPI, and with it `from picamera2 import Picamera2`
        # raises "ValueError: numpy.dtype size changed". PyPI's simplejpeg is built for
        # numpy 2, and installed into the venv it shadows apt's. --force-reinstall: pip
        # would count apt's copy as already installed; --no-deps: keep the venv's numpy.
        if [ "$(uname -m)" = aarch64 ]; then
            "$VENV/bin/pip" install --quiet --force-reinstall --no-deps simplejpeg
            say "installed simplejpeg from PyPI into $VENV (apt's is built for numpy 1.x)"
        fi
    fi
    if [ -x "$VENV/bin/edge-app" ]; then
        ln -sf "$VENV/bin/edge-app" "$LINK"
    fi

    # The key that signs MQTT unlock commands (used only with mqtt.remote_unlock = true):
    # 32 random bytes as hex, readable by the service user alone.
    if [ ! -e "$UNLOCK_KEY" ]; then
        umask 077
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$UNLOCK_KEY"
        umask 022
        chown "$SERVICE_USER:$SERVICE_USER" "$UNLOCK_KEY"
        chmod 0600 "$UNLOCK_KEY"
        say "wrote $UNLOCK_KEY (the remote-unlock signing key; see HOME_ASSISTANT.md)"
    fi

    install -d -m 0755 "$DOC_DIR"
    install -m 0644 "$REPO/docs/DAEMON.md" "$REPO/docs/WIRING.md" \
        "$REPO/docs/HOME_ASSISTANT.md" "$DOC_DIR/"
    install -D -m 0644 "$REPO/systemd/99-coral-edgetpu.rules" "$RULE"
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules || true
        udevadm trigger --subsystem-match=usb --subsystem-match=apex || true
    fi
    install -D -m 0644 "$REPO/systemd/edge-app.service" "$UNIT"
    install -D -m 0644 "$REPO/systemd/edge-app-hub.service" "$HUB_UNIT"
    if have_systemd; then
        systemctl daemon-reload
        systemctl enable "$SERVICE.service" "$HUB_SERVICE.service"
        # An upgrade has replaced the program, models and units under running services:
        # restart those that run. Stopped ones stay stopped (a first install starts nothing).
        if ! systemctl try-restart "$SERVICE.service" "$HUB_SERVICE.service"; then
            say "a service failed to restart: see journalctl -u $SERVICE -u $HUB_SERVICE"
        fi
    else
        say "systemd is not running here: enable the services later with" \
            "systemctl enable --now $SERVICE $HUB_SERVICE"
    fi

    cat <<EOF
edge-app install: done. Next:
  1. wire the relay (docs/WIRING.md) and set gpio.pin in $CONF_DIR/config.toml
  2. enrol people as the service user, so the daemon can read the gallery. That user must
     read the photos too, and they are biometric data: copy them, private, into its folder
       sudo install -d -o $SERVICE_USER -m 0700 $STATE_DIR/photos/alice
       sudo install -o $SERVICE_USER -m 0600 alice-*.jpg $STATE_DIR/photos/alice/
       sudo -u $SERVICE_USER $LINK enroll --db $STATE_DIR/gallery.db "Alice" $STATE_DIR/photos/alice/
     (the gallery keeps what it needs: delete the photos after enrolling if you like)
  3. sudo systemctl start $SERVICE && journalctl -u $SERVICE -f
  4. optional, Home Assistant: fill [mqtt] in $CONF_DIR/config.toml (docs: $DOC_DIR/HOME_ASSISTANT.md),
     then sudo systemctl restart $HUB_SERVICE && journalctl -u $HUB_SERVICE -f
EOF
}

if [ "$mode" = uninstall ]; then
    uninstall
else
    install_all
fi
