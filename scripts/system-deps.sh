#!/usr/bin/env bash
# The Debian packages the project needs beyond Python: Qt WebEngine's shared libraries
# (pywebview's Qt backend on Linux) and a font; what Qt's xcb (X11) and wayland platform
# plugins load, without which a window process aborts before it shows anything; and the
# display servers and tools the tests run for real (Xvfb, weston's headless backend,
# Debian's logrotate, desktop-file-validate, a D-Bus session with GNOME Keyring, a system
# tray and a notification daemon). Installs
# only what is missing; needs root (or sudo) for that.
set -euo pipefail

packages=(
  # Qt WebEngine and a font
  libnss3 libxkbcommon0 libxkbfile1 libxcomposite1 libxdamage1 libxrandr2 libxtst6
  libxshmfence1 libgbm1 libegl1 libgl1 libgl1-mesa-dri libasound2 libfontconfig1
  libglib2.0-0 libx11-xcb1 libxcb-dri3-0 libdrm2 libgssapi-krb5-2 fonts-dejavu-core
  libdbus-1-3
  # Qt's xcb platform plugin (Qt 6.5+ also loads libxcb-cursor at run time)
  libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0
  libxcb-render0 libxcb-shm0 libxcb-sync1 libxcb-xfixes0 libxcb-glx0 libxcb-util1
  # Qt's wayland platform plugin
  libwayland-client0 libwayland-cursor0 libwayland-egl1
  # the tests: a real X server, a real Wayland compositor, logrotate's rotations, the
  # validator of the .desktop files `log-monitor autostart on` writes, a D-Bus session
  # bus with GNOME Keyring's Secret Service (and libsecret's secret-tool to read it)
  xvfb weston logrotate desktop-file-utils dbus gnome-keyring libsecret-tools
  # strace: the test that records every byte the renderer host reads during a sign-in
  strace
  # the reference server's other backends, for its tests and `make cluster`: PostgreSQL
  # (initdb and postgres, run as its unprivileged user), Redis (the nodes' message
  # queue) and HAProxy (the load balancer in front of the nodes)
  postgresql redis-server haproxy
  # the desktop shell's tests: an XEmbed system tray (Qt's tray icon on X11), a
  # notification daemon (org.freedesktop.Notifications; dunstctl reads what it showed),
  # xdotool (clicks and keys through XTEST) and xwininfo (the X window tree)
  trayer dunst xdotool x11-utils
)

if [ "$(uname -s)" != "Linux" ] || ! command -v dpkg-query >/dev/null 2>&1; then
  exit 0  # not Debian-like: the platform's own web view is used, or install Qt's libraries by hand
fi

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "system-deps: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})." >&2
    exit 1
  fi
fi
echo "system-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
