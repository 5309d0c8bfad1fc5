#!/usr/bin/env bash
# Installs every Debian package NetTorrent needs to build, test and run.
# Idempotent: packages already present are left alone. apt-get only.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libcaf-dev libeigen3-dev libcereal-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev rapidjson-dev
  zlib1g-dev libssl-dev
  dataset-fashion-mnist
  prometheus gnuplot-nox
  openssl iproute2 dpkg-dev file time curl stress-ng
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
