#!/bin/sh
# Installs what `make train` / `make test` need and the machine lacks (Debian/Ubuntu: apt-get install -y).
# A C compiler and python3 are required; nvcc is optional (the CUDA targets are compiled only where it exists).
missing=""
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
$SUDO apt-get update -q && $SUDO apt-get install -y -q $missing
