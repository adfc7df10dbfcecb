#!/usr/bin/env bash
# Builds the Debian package (target/debian/anycast_*.deb), lists and checks
# its contents, and runs lintian on it. Installs cargo-deb (cargo install)
# and lintian (apt-get, as root) when missing. Not part of CI: the release
# build of the workspace alone takes several minutes on 2 cores.
#
#   scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
if ! command -v lintian >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "lintian is missing; install it (apt-get install lintian) or run as root" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian >/dev/null
fi

cargo build --release -j2 -p anycast-resolver -p anycast-agent -p anycast-shim -p anycast-nss
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# Stripped copies of what ships (the release profile keeps debug info for
# profiling), where the package's assets name them.
mkdir -p target/package
for file in anycast-resolver anycastctl anycast-agent libanycast_shim.so libnss_anycast.so; do
    strip --strip-unneeded -o "target/package/$file" "$target_dir/release/$file"
done

# Man pages, from each binary's own clap definitions, where the package's
# assets name them (target/man of the repository, whatever CARGO_TARGET_DIR).
mkdir -p target/man
for bin in anycast-resolver anycastctl anycast-agent; do
    ANYCAST_PRINT_MAN_PAGE=1 "$target_dir/release/$bin" > "target/man/$bin.8"
    gzip -9n -f "target/man/$bin.8"
done

deb=$(cargo deb -p anycast-resolver --no-build 2>&1 | tail -1)
echo "built: $deb"

echo "contents:"
dpkg-deb -c "$deb" | awk '{print $1, $6}'

missing=0
for path in ./usr/bin/anycast-resolver ./usr/bin/anycastctl ./usr/bin/anycast-agent \
            ./usr/lib/anycast/libanycast_shim.so ./usr/lib/x86_64-linux-gnu/libnss_anycast.so.2 \
            ./etc/anycast/resolver.toml ./etc/anycast/agent.toml ./etc/anycast/local.toml \
            ./etc/anycast/shim.conf \
            ./lib/systemd/system/anycast-resolver.service ./lib/systemd/system/anycast-agent.service \
            ./usr/share/man/man8/anycast-resolver.8.gz ./usr/share/man/man8/anycastctl.8.gz \
            ./usr/share/man/man8/anycast-agent.8.gz; do
    if ! dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "$path"; then
        echo "missing from the package: $path" >&2
        missing=1
    fi
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
for conf in /etc/anycast/resolver.toml /etc/anycast/agent.toml /etc/anycast/local.toml /etc/anycast/shim.conf; do
    grep -qx "$conf" <<<"$conffiles" || { echo "not a conffile: $conf" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
echo "every expected file is there; conffiles: $(tr '\n' ' ' <<<"$conffiles")"

echo "lintian:"
# Errors fail the script; warnings and notes are printed for the record.
lintian --tag-display-limit 0 "$deb" | tee "$target_dir/debian/lintian.txt" || true
if grep -q '^E:' "$target_dir/debian/lintian.txt"; then
    echo "lintian reports errors" >&2
    exit 1
fi
