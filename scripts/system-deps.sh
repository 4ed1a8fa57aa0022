#!/usr/bin/env bash
# Debian packages the windows need: Qt WebEngine's shared libraries (pywebview's Qt
# backend on Linux) and a font. Installs only what is missing; needs root (or sudo) for
# that. Nothing else in the project needs a system package.
set -euo pipefail

packages=(
  libnss3 libxkbcommon0 libxkbfile1 libxcomposite1 libxdamage1 libxrandr2 libxtst6
  libxshmfence1 libgbm1 libegl1 libgl1 libgl1-mesa-dri libasound2 libfontconfig1
  libglib2.0-0 libx11-xcb1 libxcb-dri3-0 libdrm2 libgssapi-krb5-2 fonts-dejavu-core
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
