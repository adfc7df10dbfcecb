#!/usr/bin/env bash
# Installs the programs the tests use when they are missing: dig (dnsutils),
# curl, a C compiler (the shim's tests build small C programs), valgrind (the
# shim's memory checks), python3, and headless Chromium with its WebDriver
# (chromium, chromium-driver: the dashboard's browser test), and unbound and
# nsd (the differential check of forwarding: NSD is the authority, unbound the
# reference resolver), and etcd (etcd-server: a real etcd cluster on
# loopback) with openssl (the certificates of etcd over TLS), and systemd
# (systemd-analyze checks the unit files), and nginx-light (nginx as the
# replicated server). Needs root (apt-get); does nothing when everything is
# present.
set -euo pipefail

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v getent >/dev/null 2>&1 || need+=(libc-bin)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v unbound >/dev/null 2>&1 || need+=(unbound)
command -v nsd >/dev/null 2>&1 || need+=(nsd)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)

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
