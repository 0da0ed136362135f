#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root): the system packages
# vxtap drives, and the project's virtual environment at .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(nftables iproute2 iputils-ping jq tcpdump tshark netcat-openbsd iperf3 postgresql ethtool procps systemd util-linux chromium)
missing=()
APT_PACKAGES+=(acl)  # setfacl: tests make secret files as systemd's LoadCredential= does
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.vxtap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[all,test]'
    touch "$stamp"
fi
