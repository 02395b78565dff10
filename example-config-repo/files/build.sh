#!/bin/sh
# Rebuilds the demo artifacts that the `demo-files` repository serves to the `mock` sandboxes,
# reproducibly (fixed timestamps, sorted entries, numeric owners, `gzip -n`), and prints the
# sha256 and size of each to paste into artifacts/<id>.yml. Needs a JDK (javac, jar), GNU tar
# and gzip. Run it from anywhere: ./files/build.sh
set -eu
cd "$(dirname "$0")"

epoch=1704067200 # 2024-01-01T00:00:00Z
export TZ=UTC LC_ALL=C
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# smsgateway: a one-class jar.
mkdir -p "$work/classes" smsgateway
javac --release 17 -encoding UTF-8 -d "$work/classes" src/smsgateway/SmsGateway.java
(cd "$work/classes" && find . -type f -name '*.class' | LC_ALL=C sort) > "$work/classes.txt"
rm -f smsgateway/smsgateway.jar
jar --create --file smsgateway/smsgateway.jar --manifest src/smsgateway/MANIFEST.MF \
    --date 2024-01-01T00:00:00Z -C "$work/classes" $(sed 's|^\./||' "$work/classes.txt")

# monitoring-stack: exporter, its default config and the SQLite migrations, as a .tar.gz
# extracted into the release.
mkdir -p "$work/ms" monitoring-stack
cp -R src/monitoring-stack/. "$work/ms/"
find "$work/ms" -type d -exec chmod 755 {} +
find "$work/ms" -type f -exec chmod 644 {} +
chmod 755 "$work/ms/bin/exporter.py"
(cd "$work/ms" && LC_ALL=C tar --sort=name --format=ustar --owner=0 --group=0 --numeric-owner \
    --mtime=@$epoch -cf - bin etc migrations) | gzip -n -9 > monitoring-stack/monitoring-stack.tar.gz

# sip-probe: the script is the artifact; nothing to build.
chmod 755 sip-probe/sip-probe

for f in smsgateway/smsgateway.jar monitoring-stack/monitoring-stack.tar.gz sip-probe/sip-probe; do
    printf '%s  sha256: %s  size: %s\n' "$f" "$(sha256sum "$f" | cut -d' ' -f1)" "$(wc -c < "$f" | tr -d ' ')"
done
