#!/usr/bin/env bash
# Installs the programs the tests use (dig, from Debian's dnsutils) when they
# are missing. Needs root (apt-get); does nothing when everything is present.
set -euo pipefail

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]}; run this script as root or install them with apt-get" >&2
    exit 1
fi
echo "installing: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
